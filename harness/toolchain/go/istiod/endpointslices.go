package main

// EndpointSlices for the in-memory cluster. A cluster's kube-controller-manager runs the
// EndpointSlice controller, whose work is Kubernetes' own reconciler (k8s.io/endpointslice,
// the library kube-controller-manager's controller calls): given a Service, the Pods its selector
// matches and the slices that exist, it creates, updates and deletes slices. Here the same
// reconciler runs after every sync that changed Services, Pods, Nodes or Namespaces, for every
// Service with a selector, and slices of Services that are gone are deleted (the garbage
// collector's part, by owner reference). What differs from the controller: no watch-driven queue,
// rate limiting or trigger-time annotations; the whole cluster is reconciled at once.

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	kerrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/endpointslice"
	endpointsliceutil "k8s.io/endpointslice/util"
	"k8s.io/klog/v2"

	"istio.io/istio/pkg/config/schema/gvr"
	"istio.io/istio/pkg/kube"
)

// controllerName is the managed-by label value of kube-controller-manager's EndpointSlice controller.
const controllerName = "endpointslice-controller.k8s.io"

// maxEndpointsPerSlice: kube-controller-manager's default (--max-endpoints-per-slice).
const maxEndpointsPerSlice = 100

type sliceController struct {
	kube    kubernetes.Interface
	tracker clienttesting.ObjectTracker
	tracked *endpointsliceutil.EndpointSliceTracker
}

func newSliceController(client kube.Client) *sliceController {
	return &sliceController{
		kube:    client.Kube(),
		tracker: client.Kube().(fakeSet).Tracker(),
		tracked: endpointsliceutil.NewEndpointSliceTracker(),
	}
}

// list reads the store directly: a List through the fake clientset would count as an informer's
// list waiting for its watch (pkg/kube's fake client waits for those to pair up).
func list[T any](t clienttesting.ObjectTracker, r schema.GroupVersionResource, kind string) ([]*T, error) {
	obj, err := t.List(r, schema.GroupVersionKind{Group: r.Group, Version: r.Version, Kind: kind}, "")
	if err != nil {
		return nil, err
	}
	items, err := meta.ExtractList(obj)
	if err != nil {
		return nil, err
	}
	out := make([]*T, 0, len(items))
	for _, it := range items {
		v, ok := any(it).(*T)
		if !ok {
			return nil, fmt.Errorf("%s: stored object of type %T", kind, it)
		}
		out = append(out, v)
	}
	return out, nil
}

func (s *sliceController) reconcileAll() []error {
	var errs []error
	services, err := list[corev1.Service](s.tracker, gvr.Service, "Service")
	if err != nil {
		return []error{err}
	}
	pods, err := list[corev1.Pod](s.tracker, gvr.Pod, "Pod")
	if err != nil {
		return []error{err}
	}
	nodes, err := list[corev1.Node](s.tracker, gvr.Node, "Node")
	if err != nil {
		return []error{err}
	}
	slices, err := list[discovery.EndpointSlice](s.tracker, gvr.EndpointSlice, "EndpointSlice")
	if err != nil {
		return []error{err}
	}
	indexer := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, n := range nodes {
		_ = indexer.Add(n)
	}
	reconciler := endpointslice.NewReconciler(s.kube, corelisters.NewNodeLister(indexer), maxEndpointsPerSlice,
		s.tracked, nil, &record.FakeRecorder{}, controllerName)
	logger := klog.Background()
	live := map[string]bool{}
	for _, svc := range services {
		if svc.Spec.Selector == nil {
			continue // a Service without selector: its slices are the user's (as in Kubernetes)
		}
		live[svc.Namespace+"/"+svc.Name] = true
		selector := labels.Set(svc.Spec.Selector).AsSelectorPreValidated()
		var selected []*corev1.Pod
		for _, p := range pods {
			if p.Namespace == svc.Namespace && selector.Matches(labels.Set(p.Labels)) {
				selected = append(selected, p)
			}
		}
		var existing []*discovery.EndpointSlice
		for _, sl := range slices {
			if sl.Namespace == svc.Namespace && sl.Labels[discovery.LabelServiceName] == svc.Name &&
				sl.Labels[discovery.LabelManagedBy] == controllerName {
				existing = append(existing, sl)
			}
		}
		if err := reconciler.Reconcile(logger, svc, selected, existing, metav1.Now().Time); err != nil {
			errs = append(errs, err)
		}
	}
	for _, sl := range slices {
		if sl.Labels[discovery.LabelManagedBy] != controllerName || live[sl.Namespace+"/"+sl.Labels[discovery.LabelServiceName]] {
			continue
		}
		err := s.kube.DiscoveryV1().EndpointSlices(sl.Namespace).Delete(context.Background(), sl.Name, metav1.DeleteOptions{})
		if err != nil && !kerrors.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	return errs
}
