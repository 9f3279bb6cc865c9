#!/usr/bin/env bash
# Fails when generated code or CRDs are stale, when gofmt would change a
# file, or when go vet complains.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
git ls-files -co --exclude-standard -z | xargs -0 -I{} cp --parents {} "$scratch/" 2>/dev/null || true
hack/update-codegen.sh "$scratch" >/dev/null
stale=0
for d in pkg/client install/crds pkg/apis; do
	if ! diff -r -q "$d" "$scratch/$d"; then stale=1; fi
done
if [ "$stale" = 1 ]; then
	echo "verify: generated files are stale; run 'make generate'" >&2
	exit 1
fi

unformatted=$(gofmt -l $(git ls-files -co --exclude-standard '*.go'))
if [ -n "$unformatted" ]; then
	echo "verify: gofmt would change:" >&2
	echo "$unformatted" >&2
	exit 1
fi
go vet ./...
echo "verify: ok"
