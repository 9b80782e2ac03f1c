package main

// The in-memory cluster istiod watches in Kubernetes mode: Istio's fake Kubernetes client
// (pkg/kube.NewFakeClient, the one istiod's own tests feed), kept equal to a directory of
// Kubernetes YAML. This file plays the parts of a cluster that are not controllers:
//   - the API server's storage: every object of the directory is created, updated or deleted in
//     the client's object trackers by diff (typed through Istio's scheme, so istiod's informers
//     see exactly what they would decode from a real API server), with the metadata the API
//     server owns (uid, creationTimestamp, generation bumped on a spec change, status kept when
//     an update carries none: status belongs to the controllers that write it);
//   - CRD registration: CustomResourceDefinitions read from YAML files at start (Istio's from the
//     istio module, Gateway API's from the sigs.k8s.io/gateway-api module the istio module
//     requires), stored as the API server would hold them, so istiod's CRD watcher starts its
//     informers for them; a custom resource of their kinds is pruned and defaulted by its CRD's
//     structural schema before it is stored, with the API server's own code (crddefaults.go);
//   - a read-only view of the stored objects at Kubernetes API paths (with the status Istio's
//     controllers wrote), and POST /sync to apply the directory now and answer when it is stored.
// Controllers stay istiod's own (Kubernetes service registry, CRD config controller, Gateway API
// controller and its status writers); the one Kubernetes controller the cluster itself needs,
// EndpointSlices from Services and Pods, is Kubernetes' own reconciler (endpointslices.go).

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	kerrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/uuid"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kubeversion "k8s.io/apimachinery/pkg/version"
	fakediscovery "k8s.io/client-go/discovery/fake"
	metadatafake "k8s.io/client-go/metadata/fake"
	clienttesting "k8s.io/client-go/testing"

	"istio.io/istio/pkg/config"
	"istio.io/istio/pkg/config/schema/collections"
	"istio.io/istio/pkg/config/schema/gvk"
	"istio.io/istio/pkg/config/schema/gvr"
	"istio.io/istio/pkg/kube"
	"istio.io/istio/pkg/log"
)

var clusterLog = log.RegisterScope("cluster", "meshproof's in-memory Kubernetes cluster")

// fakeSet is what every fake clientset of the client offers: its object tracker, and the
// reaction chain a typed call goes through (so writes behave as the clientset's own).
type fakeSet interface {
	Tracker() clienttesting.ObjectTracker
	Invokes(action clienttesting.Action, defaultReturnObj runtime.Object) (runtime.Object, error)
}

type objKey struct {
	gvr       schema.GroupVersionResource
	gvk       schema.GroupVersionKind
	namespace string
	name      string
}

func (k objKey) String() string {
	kind := k.gvk.Kind
	if k.gvk.Group != "" {
		kind = k.gvk.Group + "/" + kind
	}
	if k.namespace == "" {
		return fmt.Sprintf("%s/%s", kind, k.name)
	}
	return fmt.Sprintf("%s/%s/%s", kind, k.namespace, k.name)
}

type desired struct {
	obj  *unstructured.Unstructured
	file string
}

// syncReport is what one sync did; POST /sync answers with it. Objects are named
// [GROUP/]KIND/[NAMESPACE/]NAME; Versions holds the resourceVersion each created or updated one
// was stored at.
type syncReport struct {
	Created  []string          `json:"created"`
	Updated  []string          `json:"updated"`
	Deleted  []string          `json:"deleted"`
	Versions map[string]string `json:"versions"`
	Errors   []string          `json:"errors"`
}

type cluster struct {
	client kube.CLIClient
	dirs   []string
	slices *sliceController

	schemas map[schema.GroupVersionKind]crdSchema // of the registered CRDs, by served version

	mu      sync.Mutex
	applied map[objKey]*unstructured.Unstructured // as last applied from the directory, pruned and defaulted
}

func newCluster(dirs []string, crdPaths []string, kubernetesVersion string) (*cluster, error) {
	client := kube.NewFakeClient()
	if v := strings.TrimPrefix(kubernetesVersion, "v"); v != "" {
		parts := strings.SplitN(v, ".", 3)
		info := &kubeversion.Info{GitVersion: "v" + v, Major: parts[0]}
		if len(parts) > 1 {
			info.Minor = parts[1]
		}
		client.Kube().Discovery().(*fakediscovery.FakeDiscovery).FakedServerVersion = info
	}
	c := &cluster{
		client: client, dirs: dirs, applied: map[objKey]*unstructured.Unstructured{},
		schemas: map[schema.GroupVersionKind]crdSchema{},
	}
	for _, fs := range []any{client.Kube(), client.Istio(), client.GatewayAPI(), client.GatewayAPIInference()} {
		f := fs.(interface {
			fakeSet
			PrependReactor(verb, resource string, reaction clienttesting.ReactionFunc)
		})
		f.PrependReactor("*", "*", stampResourceVersion)
		f.PrependReactor("update", "*", statusSubresource(f.Tracker())) // runs first: checks the sent version
	}
	if err := c.registerCRDs(crdPaths); err != nil {
		return nil, err
	}
	c.slices = newSliceController(client)
	report := c.sync()
	if len(report.Errors) > 0 {
		return nil, fmt.Errorf("the cluster's objects: %s", strings.Join(report.Errors, "; "))
	}
	clusterLog.Infof("cluster: %d objects from %v", len(report.Created), dirs)
	return c, nil
}

// fakeFor returns the clientset that stores objects of API group g (as pkg/kube's fake does).
func (c *cluster) fakeFor(g string) fakeSet {
	switch {
	case strings.Contains(g, "istio.io"):
		return c.client.Istio().(fakeSet)
	case strings.Contains(g, "gateway.networking.k8s.io"), strings.Contains(g, "gateway.networking.x-k8s.io"):
		return c.client.GatewayAPI().(fakeSet)
	case strings.Contains(g, "inference.networking"):
		return c.client.GatewayAPIInference().(fakeSet)
	default:
		return c.client.Kube().(fakeSet)
	}
}

func resourceFor(k schema.GroupVersionKind) schema.GroupVersionResource {
	if r, ok := gvk.ToGVR(config.FromKubernetesGVK(k)); ok {
		return r
	}
	r, _ := meta.UnsafeGuessKindToResource(k)
	return r
}

// registerCRDs stores each CustomResourceDefinition of the files (or directories of files) where
// istiod reads CRDs: its CRD watcher lists their metadata (name, and the Gateway API bundle-version
// annotation it checks against the minimum versions it requires) through the metadata client.
func (c *cluster) registerCRDs(paths []string) error {
	md := c.client.Metadata().(*metadatafake.FakeMetadataClient).Resource(gvr.CustomResourceDefinition).(metadatafake.MetadataClient)
	n := 0
	for _, p := range paths {
		docs, err := readDocs(p)
		if err != nil {
			return err
		}
		for _, d := range docs {
			if d.obj.GetKind() != "CustomResourceDefinition" {
				continue
			}
			crd := &apiextensionsv1.CustomResourceDefinition{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(d.obj.Object, crd); err != nil {
				return fmt.Errorf("%s: CRD %s: %v", d.file, d.obj.GetName(), err)
			}
			schemas, err := crdSchemas(crd)
			if err != nil {
				return fmt.Errorf("%s: CRD %s: %v", d.file, crd.Name, err)
			}
			for k, s := range schemas {
				if _, seen := c.schemas[k]; !seen { // one CRD per kind: the first file defining it
					c.schemas[k] = s
				}
			}
			crd.UID = uuid.NewUUID()
			crd.CreationTimestamp = metav1.Now()
			partial := &metav1.PartialObjectMetadata{
				TypeMeta:   metav1.TypeMeta{APIVersion: "apiextensions.k8s.io/v1", Kind: "CustomResourceDefinition"},
				ObjectMeta: crd.ObjectMeta,
			}
			if _, err := md.CreateFake(partial, metav1.CreateOptions{}); err != nil && !kerrors.IsAlreadyExists(err) {
				return fmt.Errorf("%s: CRD %s: %v", d.file, crd.Name, err)
			}
			n++
		}
	}
	clusterLog.Infof("cluster: %d CRDs registered from %v", n, paths)
	return nil
}

// readDocs reads the YAML documents of a file, or of every *.yaml/*.yml/*.json file of a directory.
func readDocs(path string) ([]desired, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	files := []string{path}
	if st.IsDir() {
		files = nil
		entries, err := os.ReadDir(path)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			ext := filepath.Ext(e.Name())
			if !e.IsDir() && (ext == ".yaml" || ext == ".yml" || ext == ".json") {
				files = append(files, filepath.Join(path, e.Name()))
			}
		}
		sort.Strings(files)
	}
	var out []desired
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			if os.IsNotExist(err) { // removed while we listed: it is gone
				continue
			}
			return nil, err
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
		for {
			var m map[string]any
			if err := dec.Decode(&m); err != nil {
				if err == io.EOF {
					break
				}
				return nil, fmt.Errorf("%s: %v", f, err)
			}
			if len(m) == 0 {
				continue
			}
			out = append(out, desired{obj: &unstructured.Unstructured{Object: m}, file: f})
		}
	}
	return out, nil
}

// kindOrder: what a namespaced object needs exists before it (Namespaces, Nodes first).
func kindOrder(kind string) int {
	switch kind {
	case "Namespace":
		return 0
	case "Node":
		return 1
	case "ServiceAccount":
		return 2
	case "Service":
		return 3
	case "Pod":
		return 4
	default:
		return 5
	}
}

// sync makes the cluster hold exactly the directory's objects (the ones it applied before and
// are gone are deleted; objects others created, such as EndpointSlices, are left alone), then
// reconciles EndpointSlices.
func (c *cluster) sync() syncReport {
	c.mu.Lock()
	defer c.mu.Unlock()
	report := syncReport{
		Created: []string{}, Updated: []string{}, Deleted: []string{}, Versions: map[string]string{}, Errors: []string{},
	}
	var docs []desired
	for _, dir := range c.dirs {
		d, err := readDocs(dir)
		if err != nil {
			report.Errors = append(report.Errors, err.Error())
			return report
		}
		docs = append(docs, d...)
	}
	want := map[objKey]desired{}
	for _, d := range docs {
		k := d.obj.GroupVersionKind()
		if k.Kind == "" || d.obj.GetName() == "" {
			report.Errors = append(report.Errors, fmt.Sprintf("%s: an object without kind or metadata.name", d.file))
			continue
		}
		// Istio's and Gateway API's CRDs convert between their served versions with strategy None
		// (the API server only rewrites apiVersion): store the object at the version istiod watches
		if s, ok := collections.All.FindByGroupVersionAliasesKind(config.FromKubernetesGVK(k)); ok && !s.IsBuiltin() {
			if watched := s.GroupVersionKind().Kubernetes(); watched != k {
				d.obj.SetAPIVersion(watched.GroupVersion().String())
				k = watched
			}
		}
		// a custom resource is stored as the API server stores it: pruned and defaulted by its
		// CRD's structural schema (crddefaults.go)
		if s, ok := c.schemas[k]; ok {
			s.admit(d.obj.Object)
		}
		key := objKey{gvr: resourceFor(k), gvk: k, namespace: d.obj.GetNamespace(), name: d.obj.GetName()}
		if other, dup := want[key]; dup {
			report.Errors = append(report.Errors, fmt.Sprintf("%s: %s is also in %s", d.file, key, other.file))
			continue
		}
		want[key] = d
	}
	keys := make([]objKey, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if kindOrder(a.gvk.Kind) != kindOrder(b.gvk.Kind) {
			return kindOrder(a.gvk.Kind) < kindOrder(b.gvk.Kind)
		}
		return a.String() < b.String()
	})
	endpointsChanged := false
	for _, key := range keys {
		d := want[key]
		prev, had := c.applied[key]
		if had && reflect.DeepEqual(prev.Object, d.obj.Object) {
			continue
		}
		var err error
		if had {
			err = c.update(key, prev, d.obj)
		} else {
			err = c.create(key, d.obj)
		}
		if err != nil {
			report.Errors = append(report.Errors, fmt.Sprintf("%s: %s: %v", d.file, key, err))
			continue
		}
		c.applied[key] = d.obj
		if stored, err := c.fakeFor(key.gvr.Group).Tracker().Get(key.gvr, key.namespace, key.name); err == nil {
			if m, err := meta.Accessor(stored); err == nil {
				report.Versions[key.String()] = m.GetResourceVersion()
			}
		}
		if had {
			report.Updated = append(report.Updated, key.String())
		} else {
			report.Created = append(report.Created, key.String())
		}
		endpointsChanged = endpointsChanged || affectsEndpoints(key.gvk.Kind)
	}
	var gone []objKey
	for key := range c.applied {
		if _, ok := want[key]; !ok {
			gone = append(gone, key)
		}
	}
	sort.Slice(gone, func(i, j int) bool { return kindOrder(gone[i].gvk.Kind) > kindOrder(gone[j].gvk.Kind) })
	for _, key := range gone {
		_, err := c.fakeFor(key.gvr.Group).Invokes(clienttesting.NewDeleteAction(key.gvr, key.namespace, key.name), nil)
		if err != nil && !kerrors.IsNotFound(err) {
			report.Errors = append(report.Errors, fmt.Sprintf("delete %s: %v", key, err))
			continue
		}
		delete(c.applied, key)
		report.Deleted = append(report.Deleted, key.String())
		endpointsChanged = endpointsChanged || affectsEndpoints(key.gvk.Kind)
	}
	if endpointsChanged && c.slices != nil {
		for _, err := range c.slices.reconcileAll() {
			report.Errors = append(report.Errors, "EndpointSlices: "+err.Error())
		}
	}
	if n := len(report.Created) + len(report.Updated) + len(report.Deleted); n > 0 || len(report.Errors) > 0 {
		clusterLog.Infof("cluster sync: %d created, %d updated, %d deleted, errors: %v",
			len(report.Created), len(report.Updated), len(report.Deleted), report.Errors)
	}
	return report
}

func affectsEndpoints(kind string) bool {
	return kind == "Service" || kind == "Pod" || kind == "Node" || kind == "Namespace"
}

// revision is the cluster's last resourceVersion: like etcd's revision, one counter for every write.
var revision atomic.Int64

// stampResourceVersion gives every created or updated object a new resourceVersion, as the API
// server does (the fake trackers keep versions of their own but leave metadata.resourceVersion as
// sent). It lets the write go on to the tracker.
func stampResourceVersion(action clienttesting.Action) (bool, runtime.Object, error) {
	var obj runtime.Object
	switch a := action.(type) {
	case clienttesting.CreateAction:
		obj = a.GetObject()
	case clienttesting.UpdateAction:
		obj = a.GetObject()
	}
	if m, err := meta.Accessor(obj); obj != nil && err == nil {
		m.SetResourceVersion(strconv.FormatInt(revision.Add(1), 10))
	}
	return false, nil, nil
}

// statusSubresource gives updates of the status subresource the API server's meaning: only the
// status of the stored object changes (the fake tracker would store the object as sent, and
// Istio's status writers send metadata and status only, as the API server allows).
func statusSubresource(t clienttesting.ObjectTracker) clienttesting.ReactionFunc {
	return func(action clienttesting.Action) (bool, runtime.Object, error) {
		update, ok := action.(clienttesting.UpdateAction)
		if !ok || action.GetSubresource() != "status" {
			return false, nil, nil
		}
		sent, err := meta.Accessor(update.GetObject())
		if err != nil {
			return true, nil, err
		}
		res, ns := action.GetResource(), action.GetNamespace()
		current, err := t.Get(res, ns, sent.GetName())
		if err != nil {
			return true, nil, err
		}
		stored, err := meta.Accessor(current)
		if err != nil {
			return true, nil, err
		}
		if rv := sent.GetResourceVersion(); rv != "" && stored.GetResourceVersion() != "" && rv != stored.GetResourceVersion() {
			return true, nil, kerrors.NewConflict(res.GroupResource(), sent.GetName(),
				fmt.Errorf("the object has been modified; please apply your changes to the latest version and try again"))
		}
		cur, err := runtime.DefaultUnstructuredConverter.ToUnstructured(current)
		if err != nil {
			return true, nil, err
		}
		in, err := runtime.DefaultUnstructuredConverter.ToUnstructured(update.GetObject())
		if err != nil {
			return true, nil, err
		}
		if st, ok := in["status"]; ok {
			cur["status"] = st
		} else {
			delete(cur, "status")
		}
		out := reflect.New(reflect.TypeOf(current).Elem()).Interface().(runtime.Object)
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(cur, out); err != nil {
			return true, nil, err
		}
		if m, err := meta.Accessor(out); err == nil {
			m.SetResourceVersion(strconv.FormatInt(revision.Add(1), 10))
		}
		if err := t.Update(res, out, ns); err != nil {
			return true, nil, err
		}
		got, err := t.Get(res, ns, sent.GetName())
		return true, got, err
	}
}

// typed converts an object of the directory into the Go type istiod's informers decode it to.
func typed(key objKey, u *unstructured.Unstructured) (runtime.Object, error) {
	obj, err := kube.IstioScheme.New(key.gvk)
	if err != nil {
		return nil, fmt.Errorf("this istiod does not know %s: %v", key.gvk, err)
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, obj, true); err != nil {
		return nil, err
	}
	obj.GetObjectKind().SetGroupVersionKind(key.gvk)
	return obj, nil
}

func (c *cluster) create(key objKey, u *unstructured.Unstructured) error {
	u = u.DeepCopy()
	u.SetUID(uuid.NewUUID())
	u.SetCreationTimestamp(metav1.Now())
	u.SetGeneration(1)
	obj, err := typed(key, u)
	if err != nil {
		return err
	}
	_, err = c.fakeFor(key.gvr.Group).Invokes(clienttesting.NewCreateAction(key.gvr, key.namespace, obj), nil)
	return err
}

// specOf is what a change of bumps metadata.generation: everything but metadata and status.
func specOf(u *unstructured.Unstructured) map[string]any {
	out := map[string]any{}
	for k, v := range u.Object {
		if k != "metadata" && k != "status" && k != "apiVersion" && k != "kind" {
			out[k] = v
		}
	}
	return out
}

func (c *cluster) update(key objKey, prev, u *unstructured.Unstructured) error {
	fs := c.fakeFor(key.gvr.Group)
	current, err := fs.Tracker().Get(key.gvr, key.namespace, key.name)
	if kerrors.IsNotFound(err) { // deleted behind our back (a controller): create it again
		return c.create(key, u)
	}
	if err != nil {
		return err
	}
	cur, err := runtime.DefaultUnstructuredConverter.ToUnstructured(current)
	if err != nil {
		return err
	}
	curU := &unstructured.Unstructured{Object: cur}
	u = u.DeepCopy()
	if _, ok := u.Object["status"]; !ok {
		if st, ok := cur["status"]; ok {
			u.Object["status"] = st
		}
	}
	u.SetUID(curU.GetUID())
	u.SetCreationTimestamp(curU.GetCreationTimestamp())
	u.SetResourceVersion(curU.GetResourceVersion())
	generation := curU.GetGeneration()
	if !reflect.DeepEqual(specOf(prev), specOf(u)) {
		generation++
	}
	u.SetGeneration(generation)
	obj, err := typed(key, u)
	if err != nil {
		return err
	}
	_, err = fs.Invokes(clienttesting.NewUpdateAction(key.gvr, key.namespace, obj), nil)
	return err
}

// watch syncs whenever a file of the directories changes (writers replace files atomically).
func (c *cluster) watch(stop <-chan struct{}) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	for _, dir := range c.dirs {
		if err := w.Add(dir); err != nil {
			w.Close()
			return err
		}
	}
	go func() {
		defer w.Close()
		var timer *time.Timer
		fire := make(chan struct{}, 1)
		for {
			select {
			case <-stop:
				return
			case ev := <-w.Events:
				ext := filepath.Ext(ev.Name)
				if ext != ".yaml" && ext != ".yml" && ext != ".json" {
					continue
				}
				if timer == nil {
					timer = time.AfterFunc(20*time.Millisecond, func() {
						select {
						case fire <- struct{}{}:
						default:
						}
					})
				} else {
					timer.Reset(20 * time.Millisecond)
				}
			case <-fire:
				c.sync()
			case err := <-w.Errors:
				clusterLog.Warnf("watching %v: %v", c.dirs, err)
			}
		}
	}()
	return nil
}

// serve answers POST /sync (apply the directory now) and GET of stored objects at the Kubernetes
// API's paths: /api/v1/[namespaces/NS/]RESOURCE[/NAME] and /apis/GROUP/VERSION/[namespaces/NS/]RESOURCE[/NAME].
func (c *cluster) serve(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/sync", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		report := c.sync()
		w.Header().Set("Content-Type", "application/json")
		if len(report.Errors) > 0 {
			w.WriteHeader(http.StatusUnprocessableEntity)
		}
		_ = json.NewEncoder(w).Encode(report)
	})
	mux.HandleFunc("/", c.serveObjects)
	go func() { _ = http.Serve(ln, mux) }()
	return nil
}

func (c *cluster) serveObjects(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	var group, version string
	switch {
	case len(parts) >= 3 && parts[0] == "api":
		version, parts = parts[1], parts[2:]
	case len(parts) >= 4 && parts[0] == "apis":
		group, version, parts = parts[1], parts[2], parts[3:]
	default:
		http.Error(w, "not found: use /api/v1/... or /apis/GROUP/VERSION/...", http.StatusNotFound)
		return
	}
	ns := ""
	if len(parts) >= 3 && parts[0] == "namespaces" {
		ns, parts = parts[1], parts[2:]
	}
	if len(parts) == 0 || len(parts) > 2 {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	res := schema.GroupVersionResource{Group: group, Version: version, Resource: parts[0]}
	k, ok := gvk.FromGVR(res)
	if !ok {
		http.Error(w, fmt.Sprintf("resource %v is unknown", res), http.StatusNotFound)
		return
	}
	kgvk := k.Kubernetes()
	tracker := c.fakeFor(group).Tracker()
	var body any
	if len(parts) == 2 {
		obj, err := tracker.Get(res, ns, parts[1])
		if err != nil {
			code := http.StatusInternalServerError
			if kerrors.IsNotFound(err) {
				code = http.StatusNotFound
			}
			http.Error(w, err.Error(), code)
			return
		}
		item, err := asMap(obj, kgvk)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		body = item
	} else {
		list, err := tracker.List(res, kgvk, ns)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		objs, err := meta.ExtractList(list)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		items := make([]map[string]any, 0, len(objs))
		for _, o := range objs {
			item, err := asMap(o, kgvk)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			items = append(items, item)
		}
		sort.Slice(items, func(i, j int) bool {
			return fmt.Sprint(items[i]["metadata"]) < fmt.Sprint(items[j]["metadata"])
		})
		body = map[string]any{"apiVersion": "v1", "kind": "List", "items": items}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(body)
}

func asMap(obj runtime.Object, k schema.GroupVersionKind) (map[string]any, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, err
	}
	m["apiVersion"], m["kind"] = k.GroupVersion().String(), k.Kind
	if md, ok := m["metadata"].(map[string]any); ok {
		delete(md, "managedFields")
	}
	return m, nil
}
