package cniplugin

import (
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/sluicenet/sluice/pkg/cniproto"
)

// outcome is what the plugin does after trying to reach the helper.
type outcome int

const (
	outcomeDone   outcome = iota // helper acked
	outcomeSpool                 // succeed, leave the request in the spool
	outcomeIgnore                // succeed, nothing to keep (e.g. GC, CHECK)
	outcomeRetry                 // fail with code 11: runtime retries
	outcomeFail                  // fail with the helper's own error
)

// decide is the failure policy in one place. Only an unreachable or slow
// helper is subject to fail-open; DEL never fails because of the helper.
func decide(kind cniproto.Kind, failClosed bool, err error) outcome {
	if err == nil {
		return outcomeDone
	}
	unreachable := cniproto.IsUnreachable(err)
	switch kind {
	case cniproto.KindDel:
		return outcomeSpool
	case cniproto.KindAdd:
		switch {
		case failClosed:
			return outcomeRetry
		case unreachable:
			return outcomeSpool
		default:
			// The helper answered but refused. Spooling would just replay
			// the refusal; let the runtime retry instead.
			return outcomeRetry
		}
	case cniproto.KindCheck, cniproto.KindGC, cniproto.KindStatus:
		switch {
		case !unreachable:
			return outcomeFail
		case failClosed:
			return outcomeRetry
		default:
			return outcomeIgnore
		}
	}
	return outcomeFail
}

func tryAgainLater(kind cniproto.Kind, err error) error {
	return types.NewError(types.ErrTryAgainLater, fmt.Sprintf("sluice helper did not acknowledge %s", kind), err.Error())
}

// errPluginNotAvailable is the CNI spec's STATUS code 50, "the plugin is not
// available (cannot service ADD requests)"; cni v1.3.0 has no constant.
const errPluginNotAvailable uint = 50
