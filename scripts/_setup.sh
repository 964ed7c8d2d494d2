# Sourced by scripts/demo and scripts/test: make .venv if missing and install gpunet into it.
# Usage: . scripts/_setup.sh [EXTRAS]   (e.g. "test")
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "gpunet: creating .venv with $("$py" --version 2>&1)" >&2
    "$py" -m venv .venv
fi
spec="."
[ -n "${1:-}" ] && spec=".[$1]"
# Reinstall only when pyproject.toml changed since the last install with these extras.
stamp=".venv/.gpunet-installed-${1:-base}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "gpunet: installing $spec into .venv" >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec" >&2
    touch "$stamp"
fi
export PATH="$root/.venv/bin:$PATH"
