// conformance-plan prints, as JSON, what `meshproof conformance` needs to know before it runs the
// Gateway API conformance suite against Istio: the suite's conformance profiles (their core and
// extended features), every test of the suite (its features, whether it is provisional) and the
// features Istio declares it supports (istio.io/istio/pilot/pkg/config/kube/gateway.SupportedFeatures).
// It is built in a wrapper module that requires the pinned istio.io/istio, so the suite and the
// feature list are the ones that Istio release builds against. It reads no cluster and no network.
package main

import (
	"encoding/json"
	"os"
	"sort"

	"istio.io/istio/pilot/pkg/config/kube/gateway"
	"sigs.k8s.io/gateway-api/conformance/tests"
	"sigs.k8s.io/gateway-api/conformance/utils/suite"
	"sigs.k8s.io/gateway-api/pkg/features"
	"k8s.io/apimachinery/pkg/util/sets"
)

type profile struct {
	Core     []string `json:"core"`
	Extended []string `json:"extended"`
}

type test struct {
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Features    []string `json:"features"`
	Provisional bool     `json:"provisional"`
}

type plan struct {
	Profiles        map[string]profile `json:"profiles"`
	Tests           []test             `json:"tests"`
	IstioSupported  []string           `json:"istio_supported"`
	FeatureChannels map[string]string  `json:"feature_channels"`
}

func names(s sets.Set[features.FeatureName]) []string {
	out := make([]string, 0, s.Len())
	for f := range s {
		out = append(out, string(f))
	}
	sort.Strings(out)
	return out
}

func main() {
	p := plan{Profiles: map[string]profile{}, FeatureChannels: map[string]string{}}
	for _, cp := range []suite.ConformanceProfile{
		suite.GatewayHTTPConformanceProfile,
		suite.GatewayTLSConformanceProfile,
		suite.GatewayTCPConformanceProfile,
		suite.GatewayUDPConformanceProfile,
		suite.GatewayGRPCConformanceProfile,
		suite.MeshHTTPConformanceProfile,
		suite.MeshGRPCConformanceProfile,
	} {
		p.Profiles[string(cp.Name)] = profile{Core: names(cp.CoreFeatures), Extended: names(cp.ExtendedFeatures)}
	}
	for _, t := range tests.ConformanceTests {
		fs := make([]string, 0, len(t.Features))
		for _, f := range t.Features {
			fs = append(fs, string(f))
		}
		p.Tests = append(p.Tests, test{t.ShortName, t.Description, fs, t.Provisional})
	}
	p.IstioSupported = names(features.SetsToNamesSet(gateway.SupportedFeatures))
	for f := range features.AllFeatures {
		p.FeatureChannels[string(f.Name)] = string(f.Channel)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(p); err != nil {
		os.Exit(1)
	}
}
