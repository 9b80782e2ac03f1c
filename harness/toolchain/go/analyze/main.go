// Command meshproof-analyze runs Istio's own validation and analyzers over YAML.
//
// `meshproof-analyze` reads one JSON request on stdin and writes one JSON report on
// stdout. It runs what `istioctl analyze --use-kube=false` runs (pkg/config/analysis/local with
// analyzers.AllCombined(): every Istio schema's ValidateConfig from pkg/config/validation as
// IST0106/IST0133, plus the cross-reference analyzers), built from the same pinned
// istio.io/istio module as meshproof-istiod, with which it shares nearly all compiled packages
// (see docs/BENCHMARKS.md for the measured cost against building istioctl). Nothing here
// judges configuration: every verdict is Istio's.
//
// Request (stdin): {"namespace": "", "istioNamespace": "istio-system", "sources":
// [{"name": "file.yaml", "text": "...", "context": false, "replaced": false}, ...]}. Sources
// marked "context" are what is already applied (or the manifests); those also marked
// "replaced" are context objects the new sources replace. The new sources are analyzed with
// the context that is not replaced; a message about a context object is reported only if it
// is new, i.e. not also produced by the context as it was (replaced objects included).
//
// Report (stdout): {"messages": [{"code", "level", "message", "kind", "namespace", "name",
// "file", "line", "fieldLines": {"{.spec...}": line}, "context"}], "sourceErrors": ["..."]}
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"istio.io/istio/pkg/config/analysis/analyzers"
	"istio.io/istio/pkg/config/analysis/diag"
	"istio.io/istio/pkg/config/analysis/local"
	"istio.io/istio/pkg/config/resource"
	"istio.io/istio/pkg/log"
)

type analyzeSource struct {
	Name     string `json:"name"`
	Text     string `json:"text"`
	Context  bool   `json:"context"`
	Replaced bool   `json:"replaced"`
}

type analyzeRequest struct {
	Namespace      string          `json:"namespace"`
	IstioNamespace string          `json:"istioNamespace"`
	MeshConfig     string          `json:"meshConfig"`
	Sources        []analyzeSource `json:"sources"`
}

type analyzeMessage struct {
	Code       string         `json:"code"`
	Level      string         `json:"level"`
	Message    string         `json:"message"`
	Kind       string         `json:"kind"`
	Namespace  string         `json:"namespace"`
	Name       string         `json:"name"`
	File       string         `json:"file"`
	Line       int            `json:"line"`
	FieldLines map[string]int `json:"fieldLines,omitempty"`
	Context    bool           `json:"context"`
}

type analyzeReport struct {
	Messages     []analyzeMessage `json:"messages"`
	SourceErrors []string         `json:"sourceErrors"`
}

func runAnalyze(stdin io.Reader, stdout io.Writer) error {
	var req analyzeRequest
	if err := json.NewDecoder(stdin).Decode(&req); err != nil {
		return fmt.Errorf("reading the request on stdin: %w", err)
	}
	// An empty namespace analyzes (and reports on) every namespace, like `istioctl analyze -A`.
	if req.IstioNamespace == "" {
		req.IstioNamespace = "istio-system"
	}
	contextFiles := map[string]bool{}
	var now, before []analyzeSource
	for _, s := range req.Sources {
		if s.Context {
			contextFiles[s.Name] = true
			before = append(before, s)
		}
		if !s.Replaced {
			now = append(now, s)
		}
	}
	msgs, srcErrs, err := analyzeOnce(req, now)
	if err != nil {
		return err
	}
	baseline := map[string]bool{}
	if len(before) > 0 {
		before, _, err := analyzeOnce(req, before)
		if err != nil {
			return err
		}
		for _, m := range before {
			baseline[m.String()] = true
		}
	}
	report := analyzeReport{Messages: []analyzeMessage{}, SourceErrors: srcErrs}
	for _, m := range msgs {
		out := convertMessage(m)
		out.Context = contextFiles[out.File]
		if out.Context && baseline[m.String()] {
			continue // not caused by the new sources
		}
		report.Messages = append(report.Messages, out)
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", " ")
	return enc.Encode(report)
}

func analyzeOnce(req analyzeRequest, sources []analyzeSource) (diag.Messages, []string, error) {
	sa := local.NewIstiodAnalyzer(analyzers.AllCombined(),
		resource.Namespace(req.Namespace), resource.Namespace(req.IstioNamespace), nil)
	if req.MeshConfig != "" {
		if err := sa.AddFileKubeMeshConfig(req.MeshConfig); err != nil {
			return nil, nil, fmt.Errorf("mesh config %s: %w", req.MeshConfig, err)
		}
	}
	if err := sa.AddDefaultResources(); err != nil {
		return nil, nil, fmt.Errorf("adding Istio's default resources: %w", err)
	}
	readers := make([]local.ReaderSource, 0, len(sources))
	for _, s := range sources {
		readers = append(readers, local.ReaderSource{Name: s.Name, Reader: strings.NewReader(s.Text)})
	}
	srcErrs := []string{}
	if err := sa.AddReaderKubeSource(readers); err != nil {
		srcErrs = append(srcErrs, err.Error())
	}
	cancel := make(chan struct{})
	result, err := sa.Analyze(cancel)
	if err != nil {
		return nil, nil, fmt.Errorf("analysis: %w", err)
	}
	return result.Messages, srcErrs, nil
}

func convertMessage(m diag.Message) analyzeMessage {
	out := analyzeMessage{
		Code:    m.Type.Code(),
		Level:   m.Type.Level().String(),
		Message: m.Type.Template(),
		Line:    m.Line,
	}
	if u, ok := m.Unstructured(false)["message"].(string); ok {
		out.Message = u
	}
	if r := m.Resource; r != nil {
		if r.Metadata.Schema != nil {
			out.Kind = r.Metadata.Schema.Kind()
		}
		out.Namespace = string(r.Metadata.FullName.Namespace)
		out.Name = string(r.Metadata.FullName.Name)
		if r.Origin != nil {
			if ref := r.Origin.Reference(); ref != nil {
				file, line := splitReference(ref.String())
				out.File = file
				if out.Line == 0 {
					out.Line = line
				}
			}
			out.FieldLines = r.Origin.FieldMap()
		}
	}
	return out
}

// splitReference splits Istio's "FILE:LINE" reference (the line is absent for JSON files).
func splitReference(ref string) (string, int) {
	i := strings.LastIndex(ref, ":")
	if i < 0 {
		return ref, 0
	}
	var line int
	if _, err := fmt.Sscanf(ref[i+1:], "%d", &line); err != nil {
		return ref, 0
	}
	return ref[:i], line
}

func main() {
	// Istio's own logging goes to stderr, errors only: stdout carries the JSON report.
	opts := log.DefaultOptions()
	opts.OutputPaths = []string{"stderr"}
	opts.SetDefaultOutputLevel(log.OverrideScopeName, log.ErrorLevel)
	if err := log.Configure(opts); err != nil {
		fmt.Fprintln(os.Stderr, "meshproof-analyze: logging:", err)
		os.Exit(1)
	}
	if err := runAnalyze(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "meshproof-analyze:", err)
		os.Exit(1)
	}
}
