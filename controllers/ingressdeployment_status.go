package controllers

import (
	"fmt"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	porticov1alpha1 "portico.dev/portico/api/v1alpha1"
)

// problem is something wrong with a fleet's surroundings, reported in the Degraded condition
// and as a Warning Event.
type problem struct {
	Reason  string
	Message string
}

// workloadState is what the proxy workload (DaemonSet or Deployment) reports.
type workloadState struct {
	Found       bool
	Desired     int32
	Ready       int32
	Available   int32
	Progressing bool
	Selector    string
}

// observation is everything the fleet's status is computed from.
type observation struct {
	Classes        []string
	RenderErr      error
	ApplyErr       error
	Problems       []problem
	Proxy          workloadState
	DefaultBackend *workloadState // nil unless the default backend is Managed
	// Addresses are where the fleet is reachable now; empty means nothing is known (a pending
	// balancer, no Ready proxy), in which case the published addresses are kept.
	Addresses []porticov1alpha1.Address
	// Unsupported counts the fleet's Ingresses with annotations it does not honour.
	Unsupported int32
}

func daemonSetState(ds *appsv1.DaemonSet, selector string) workloadState {
	s := ds.Status
	return workloadState{
		Found:       true,
		Desired:     s.DesiredNumberScheduled,
		Ready:       s.NumberReady,
		Available:   s.NumberAvailable,
		Progressing: s.ObservedGeneration < ds.Generation || s.UpdatedNumberScheduled < s.DesiredNumberScheduled,
		Selector:    selector,
	}
}

func deploymentState(d *appsv1.Deployment, selector string) workloadState {
	s := d.Status
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	return workloadState{
		Found:       true,
		Desired:     s.Replicas,
		Ready:       s.ReadyReplicas,
		Available:   s.AvailableReplicas,
		Progressing: s.ObservedGeneration < d.Generation || s.UpdatedReplicas < want || s.Replicas > s.UpdatedReplicas,
		Selector:    selector,
	}
}

// computeStatus returns the fleet's new status from its old one and an observation. It keeps the
// last transition time of conditions whose status did not change, so computing twice from the
// same observation gives an equal status (and no write).
func computeStatus(f *porticov1alpha1.IngressDeployment, obs observation) porticov1alpha1.IngressDeploymentStatus {
	st := *f.Status.DeepCopy()
	st.ObservedGeneration = f.Generation
	st.IngressClasses = obs.Classes
	st.IngressesWithUnsupportedAnnotations = obs.Unsupported
	st.Replicas, st.ReadyReplicas, st.Selector = obs.Proxy.Desired, obs.Proxy.Ready, obs.Proxy.Selector
	if len(obs.Addresses) > 0 {
		st.Addresses = obs.Addresses
	}
	set := func(t string, ok bool, reason, msg string) {
		s := metav1.ConditionFalse
		if ok {
			s = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: f.Generation})
	}

	if obs.RenderErr != nil {
		set(porticov1alpha1.ConditionAccepted, false, porticov1alpha1.ReasonInvalidSpec, obs.RenderErr.Error())
	} else if len(obs.Classes) == 0 {
		set(porticov1alpha1.ConditionAccepted, true, porticov1alpha1.ReasonNoIngressClass,
			fmt.Sprintf("fleet rendered; no IngressClass with controller %s points at it yet, so it serves no Ingress", porticov1alpha1.ControllerName))
	} else {
		set(porticov1alpha1.ConditionAccepted, true, porticov1alpha1.ReasonAccepted, "serving IngressClass "+strings.Join(obs.Classes, ", "))
	}

	switch p := obs.Proxy; {
	case p.Available > 0:
		set(porticov1alpha1.ConditionAvailable, true, porticov1alpha1.ReasonAvailable, fmt.Sprintf("%d of %d proxies available", p.Available, p.Desired))
	case !p.Found:
		set(porticov1alpha1.ConditionAvailable, false, porticov1alpha1.ReasonUnavailable, "proxy workload not created yet")
	default:
		set(porticov1alpha1.ConditionAvailable, false, porticov1alpha1.ReasonUnavailable, fmt.Sprintf("0 of %d proxies available", p.Desired))
	}

	progressing := obs.Proxy.Progressing || !obs.Proxy.Found
	if db := obs.DefaultBackend; db != nil {
		progressing = progressing || db.Progressing || !db.Found
	}
	if progressing {
		set(porticov1alpha1.ConditionProgressing, true, porticov1alpha1.ReasonRolloutInProgress, "rolling out the fleet's workloads")
	} else {
		set(porticov1alpha1.ConditionProgressing, false, porticov1alpha1.ReasonRolloutComplete, "every workload is up to date")
	}

	problems := append([]problem(nil), obs.Problems...)
	if obs.ApplyErr != nil {
		problems = append(problems, problem{porticov1alpha1.ReasonApplyFailed, obs.ApplyErr.Error()})
	}
	if db := obs.DefaultBackend; db != nil && db.Found && db.Available == 0 && !db.Progressing {
		problems = append(problems, problem{porticov1alpha1.ReasonDefaultBackendPending, "the managed default backend has no available pod"})
	}
	if len(problems) == 0 {
		set(porticov1alpha1.ConditionDegraded, false, porticov1alpha1.ReasonAsExpected, "no problem found")
	} else {
		sort.SliceStable(problems, func(a, b int) bool { return problems[a].Reason < problems[b].Reason })
		msgs := make([]string, len(problems))
		for i, p := range problems {
			msgs[i] = p.Message
		}
		set(porticov1alpha1.ConditionDegraded, true, problems[0].Reason, truncate(strings.Join(msgs, "; "), 32768))
	}
	return st
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
