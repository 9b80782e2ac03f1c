// Command meshproof-istiod runs Istio's real control plane (pilot's bootstrap.Server,
// the same code as pilot-discovery) against an in-memory Kubernetes cluster.
//
// Kubernetes mode (-kubeDir): istiod gets Istio's own in-memory Kubernetes client
// (pkg/kube.NewFakeClient, the one istiod's own tests feed) holding the objects of a directory of
// Kubernetes YAML (Namespaces, ServiceAccounts, Services, Pods, Nodes, Istio and Gateway API
// objects; see cluster.go), kept in sync with it, with the CRDs of -crds registered. istiod runs
// as on a cluster: the Kubernetes service registry, the CRD config controller and the Gateway API
// controller (with its leader-elected status writers) read that client. EndpointSlices come from
// Kubernetes' own reconciler (endpointslices.go). -kubeAPIAddr serves the stored objects, with
// their status, and POST /sync.
//
// File mode (-configDir, kept for callers of the previous launcher): services, endpoints and
// config come from Istio YAML in a directory, the client holds nothing (from Istio 1.30 on the
// ServiceEntry registry needs the multicluster controller, which istiod only creates with a
// Kubernetes client).
//
// Why a launcher: bootstrap.Server creates a client for a real API server unless one is set
// (its kubeClient field is unexported). Everything that turns config into xDS is Istio's code.
package main

import (
	"flag"
	"fmt"
	"os"
	"reflect"
	"strings"
	"unsafe"

	"istio.io/istio/pilot/pkg/bootstrap"
	"istio.io/istio/pilot/pkg/serviceregistry/provider"
	"istio.io/istio/pkg/cmd"
	"istio.io/istio/pkg/ctrlz"
	"istio.io/istio/pkg/kube"
	"istio.io/istio/pkg/log"
)

func main() {
	args := bootstrap.NewPilotArgs(func(p *bootstrap.PilotArgs) {
		p.CtrlZOptions = ctrlz.DefaultOptions()
		p.InjectionOptions = bootstrap.InjectionOptions{InjectionDirectory: "./var/lib/istio/inject"}
	})
	fs := flag.NewFlagSet("meshproof-istiod", flag.ExitOnError)
	fs.StringVar(&args.RegistryOptions.FileDir, "configDir", "", "directory of Istio YAML to watch")
	fs.StringVar(&args.MeshConfigFile, "meshConfig", "./etc/istio/config/mesh", "mesh config file")
	fs.StringVar(&args.NetworksConfigFile, "networksConfig", "./etc/istio/config/meshNetworks", "mesh networks file")
	fs.StringVar(&args.Namespace, "namespace", "istio-system", "istiod's namespace")
	fs.StringVar(&args.RegistryOptions.KubeOptions.DomainSuffix, "domain", "cluster.local", "DNS domain suffix")
	fs.StringVar((*string)(&args.RegistryOptions.KubeOptions.ClusterID), "clusterID", "Kubernetes", "cluster ID")
	fs.StringVar(&args.ServerOptions.HTTPAddr, "httpAddr", "127.0.0.1:8080", "debug/readiness HTTP address")
	fs.StringVar(&args.ServerOptions.HTTPSAddr, "httpsAddr", "127.0.0.1:15017", "webhook HTTPS address")
	fs.StringVar(&args.ServerOptions.GRPCAddr, "grpcAddr", "127.0.0.1:15010", "plaintext xDS address")
	fs.StringVar(&args.ServerOptions.SecureGRPCAddr, "secureGRPCAddr", "127.0.0.1:15012", "TLS xDS address")
	fs.StringVar(&args.ServerOptions.MonitoringAddr, "monitoringAddr", "127.0.0.1:15014", "monitoring address")
	ctrlzPort := fs.Uint("ctrlzPort", 0, "ControlZ port (0 disables)")
	logLevel := fs.String("logLevel", "default:info", "per-scope log levels, scope:level,...")
	kubeDir := fs.String("kubeDir", "", "comma-separated directories of Kubernetes YAML the in-memory cluster holds (Kubernetes mode)")
	crds := fs.String("crds", "", "comma-separated CRD YAML files or directories to register (Kubernetes mode)")
	kubeAPIAddr := fs.String("kubeAPIAddr", "", "address of the in-memory cluster's object view and /sync")
	kubernetesVersion := fs.String("kubernetesVersion", "", "version the in-memory cluster reports, e.g. v1.37.2")
	_ = fs.Parse(os.Args[1:])

	args.ServerOptions.TLSOptions.TLSMinVersion = bootstrap.TLSMinVersion1_2
	if *kubeDir != "" && args.RegistryOptions.FileDir != "" {
		fmt.Fprintln(os.Stderr, "meshproof-istiod: -kubeDir and -configDir exclude each other")
		os.Exit(2)
	}
	if *kubeDir != "" {
		args.RegistryOptions.Registries = []string{string(provider.Kubernetes)}
	} else {
		args.RegistryOptions.Registries = nil // services come from ServiceEntry/WorkloadEntry files only
	}
	args.CtrlZOptions.Port = uint16(*ctrlzPort)
	args.CtrlZOptions.Address = "127.0.0.1"
	opts := log.DefaultOptions()
	for _, item := range strings.Split(*logLevel, ",") {
		if scope, level, ok := strings.Cut(item, ":"); ok {
			opts.SetDefaultOutputLevel(scope, log.StringToLevel(level))
		}
	}
	if err := log.Configure(opts); err != nil {
		fmt.Fprintln(os.Stderr, "meshproof-istiod: bad -logLevel:", err)
		os.Exit(2)
	}
	if err := args.Complete(); err != nil {
		fmt.Fprintln(os.Stderr, "meshproof-istiod:", err)
		os.Exit(2)
	}

	stop := make(chan struct{})
	var client kube.Client = kube.NewFakeClient()
	if *kubeDir != "" {
		var paths []string
		for _, p := range strings.Split(*crds, ",") {
			if p != "" {
				paths = append(paths, p)
			}
		}
		c, err := newCluster(strings.Split(*kubeDir, ","), paths, *kubernetesVersion)
		if err != nil {
			fmt.Fprintln(os.Stderr, "meshproof-istiod:", err)
			os.Exit(2)
		}
		if err := c.watch(stop); err != nil {
			fmt.Fprintln(os.Stderr, "meshproof-istiod: watching", *kubeDir, err)
			os.Exit(1)
		}
		if *kubeAPIAddr != "" {
			if err := c.serve(*kubeAPIAddr); err != nil {
				fmt.Fprintln(os.Stderr, "meshproof-istiod: serving the cluster view:", err)
				os.Exit(1)
			}
		}
		client = c.client
	}
	server, err := bootstrap.NewServer(args, withClient(client))
	if err != nil {
		fmt.Fprintln(os.Stderr, "meshproof-istiod: failed to create discovery service:", err)
		os.Exit(1)
	}
	if err := server.Start(stop); err != nil {
		fmt.Fprintln(os.Stderr, "meshproof-istiod: failed to start discovery service:", err)
		os.Exit(1)
	}
	cmd.WaitSignal(stop)
	server.WaitUntilCompletion()
}

// withClient sets bootstrap.Server.kubeClient (unexported; the bootstrap code skips creating a
// client when one is already set) to Istio's in-memory fake client.
func withClient(client kube.Client) func(s *bootstrap.Server) {
	return func(s *bootstrap.Server) {
		field := reflect.ValueOf(s).Elem().FieldByName("kubeClient")
		if !field.IsValid() {
			fmt.Fprintln(os.Stderr, "meshproof-istiod: this Istio version has no bootstrap.Server.kubeClient field")
			os.Exit(3)
		}
		reflect.NewAt(field.Type(), unsafe.Pointer(field.UnsafeAddr())).Elem().Set(reflect.ValueOf(&client).Elem())
	}
}
