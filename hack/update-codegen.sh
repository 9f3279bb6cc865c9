#!/usr/bin/env bash
# Regenerates deepcopy, the typed clientset, listers, informers and the CRDs
# from the Go types in pkg/apis. `make generate` runs it; `make verify` runs
# it into a scratch copy and fails when the committed files differ.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root}            # where to write; verify passes a scratch copy
tools=$root/.cache/tools
module=github.com/sluicenet/sluice
apis=$module/pkg/apis/sluice/v1alpha1
header=$root/hack/boilerplate.go.txt

mkdir -p "$tools"
for t in k8s.io/code-generator/cmd/deepcopy-gen k8s.io/code-generator/cmd/client-gen \
	k8s.io/code-generator/cmd/lister-gen k8s.io/code-generator/cmd/informer-gen \
	sigs.k8s.io/controller-tools/cmd/controller-gen; do
	[ -x "$tools/$(basename "$t")" ] || go build -C "$root/hack/tools" -o "$tools/" "$t"
done

cd "$out"
"$tools/deepcopy-gen" --go-header-file "$header" --output-file zz_generated.deepcopy.go "$apis"

rm -rf pkg/client
"$tools/client-gen" --go-header-file "$header" --clientset-name versioned --input-base "" \
	--input "$apis" --output-dir pkg/client/clientset --output-pkg "$module/pkg/client/clientset"
"$tools/lister-gen" --go-header-file "$header" \
	--output-dir pkg/client/listers --output-pkg "$module/pkg/client/listers" "$apis"
"$tools/informer-gen" --go-header-file "$header" \
	--versioned-clientset-package "$module/pkg/client/clientset/versioned" \
	--listers-package "$module/pkg/client/listers" \
	--output-dir pkg/client/informers --output-pkg "$module/pkg/client/informers" "$apis"

rm -rf install/crds && mkdir -p install/crds
"$tools/controller-gen" crd:crdVersions=v1 paths=./pkg/apis/... output:crd:artifacts:config=install/crds
