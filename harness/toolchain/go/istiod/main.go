// Command meshproof-istiod runs Istio's real control plane (pilot's bootstrap.Server,
// the same code as pilot-discovery) with configuration from a directory and no Kubernetes.
//
// Why it exists: from Istio 1.30 on, the ServiceEntry registry reads namespaces from the
// multicluster controller, which istiod only creates when it has a Kubernetes client; with
// --configDir and no registries it is nil and pilot-discovery panics in
// serviceentry.newController. This launcher hands istiod Istio's own in-memory Kubernetes
// client (pkg/kube.NewFakeClient, the one istiod's own server tests use) holding nothing, so
// every Kubernetes-backed controller starts against an empty cluster while services,
// endpoints and all routing/security config come from the watched directory. Everything
// that turns config into xDS is Istio's code, unchanged.
package main

import (
	"flag"
	"fmt"
	"os"
	"reflect"
	"strings"
	"unsafe"

	"istio.io/istio/pilot/pkg/bootstrap"
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
	_ = fs.Parse(os.Args[1:])

	args.ServerOptions.TLSOptions.TLSMinVersion = bootstrap.TLSMinVersion1_2
	args.RegistryOptions.Registries = nil // services come from ServiceEntry/WorkloadEntry files only
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
	server, err := bootstrap.NewServer(args, withEmptyCluster)
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

// withEmptyCluster sets bootstrap.Server.kubeClient (unexported; the bootstrap code skips
// creating a client when one is already set) to Istio's in-memory fake client.
func withEmptyCluster(s *bootstrap.Server) {
	field := reflect.ValueOf(s).Elem().FieldByName("kubeClient")
	if !field.IsValid() {
		fmt.Fprintln(os.Stderr, "meshproof-istiod: this Istio version has no bootstrap.Server.kubeClient field")
		os.Exit(3)
	}
	var client kube.Client = kube.NewFakeClient()
	reflect.NewAt(field.Type(), unsafe.Pointer(field.UnsafeAddr())).Elem().Set(reflect.ValueOf(&client).Elem())
}
