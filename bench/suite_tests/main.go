// Package main, suite-tests, prints the Gateway API conformance suite's tests (name, features, provisional) and its
// HTTP profiles, as JSON, for whichever suite version the module requires.
package main

import (
	"encoding/json"
	"os"
	"sort"

	"k8s.io/apimachinery/pkg/util/sets"
	"sigs.k8s.io/gateway-api/conformance/tests"
	"sigs.k8s.io/gateway-api/conformance/utils/suite"
	"sigs.k8s.io/gateway-api/pkg/features"
)

func names(s sets.Set[features.FeatureName]) []string {
	out := []string{}
	for f := range s {
		out = append(out, string(f))
	}
	sort.Strings(out)
	return out
}

func main() {
	type test struct {
		Name        string   `json:"name"`
		Features    []string `json:"features"`
		Provisional bool     `json:"provisional"`
	}
	out := map[string]any{}
	profiles := map[string]map[string][]string{}
	for _, cp := range []suite.ConformanceProfile{suite.GatewayHTTPConformanceProfile, suite.MeshHTTPConformanceProfile} {
		profiles[string(cp.Name)] = map[string][]string{"core": names(cp.CoreFeatures), "extended": names(cp.ExtendedFeatures)}
	}
	ts := []test{}
	for _, t := range tests.ConformanceTests {
		fs := []string{}
		for _, f := range t.Features {
			fs = append(fs, string(f))
		}
		ts = append(ts, test{t.ShortName, fs, t.Provisional})
	}
	out["profiles"] = profiles
	out["tests"] = ts
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	_ = enc.Encode(out)
}
