// Command meshproof-analyze runs Istio's own validation and analyzers over YAML.
//
// `meshproof-analyze` reads one JSON request on stdin and writes one JSON report on
// stdout. It runs what `istioctl analyze --use-kube=false` runs (pkg/config/analysis/local with
// analyzers.AllCombined(): every Istio schema's ValidateConfig from pkg/config/validation as
// IST0106/IST0133, plus the cross-reference analyzers), built from the same pinned
// istio.io/istio module as meshproof-istiod, with which it shares nearly all compiled packages
// (see docs/BENCHMARKS.md for the measured cost against building istioctl). Nothing here
// judges configuration: every verdict is Istio's, or the Kubernetes API server's (crd.go).
//
// Request (stdin): {"namespace": "", "istioNamespace": "istio-system", "sources":
// [{"name": "file.yaml", "text": "...", "context": false, "replaced": false}, ...],
// "crds": ["/path/crd.json", ...]}. A source whose kind one of the "crds" files defines (the
// Gateway API's) is first admitted as the API server admits a create (crd.go): if it would be
// refused, its reasons go to "crdErrors" and Istio does not see it; else Istio sees it pruned
// and defaulted, as the API server would store it. Sources
// marked "context" are what is already applied (or the manifests); those also marked
// "replaced" are context objects the new sources replace. The new sources are analyzed with
// the context that is not replaced; a message about a context object is reported only if it
// is new, i.e. not also produced by the context as it was (replaced objects included).
//
// Report (stdout): {"messages": [{"code", "level", "message", "kind", "namespace", "name",
// "file", "line", "fieldLines": {"{.spec...}": line}, "context"}], "sourceErrors": ["..."],
// "crdErrors": [{"file", "field", "type", "message", "crd", "rule"}]}
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"

	"istio.io/istio/pkg/config/analysis/analyzers"
	"istio.io/istio/pkg/config/analysis/diag"
	"istio.io/istio/pkg/config/analysis/local"
	"istio.io/istio/pkg/config/resource"
	"istio.io/istio/pkg/log"
	"sigs.k8s.io/yaml"
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
	CRDs           []string        `json:"crds"`
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
	CRDErrors    []crdError       `json:"crdErrors"`
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
	report := analyzeReport{Messages: []analyzeMessage{}, CRDErrors: []crdError{}}
	sources, err := admitAll(req, &report)
	if err != nil {
		return err
	}
	contextFiles := map[string]bool{}
	var now, before []analyzeSource
	for _, s := range sources {
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
	report.SourceErrors = srcErrs
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

// admitAll admits every source whose kind a CRD of req.CRDs defines, as the API server would
// on create. A new source the API server would refuse is reported in report.CRDErrors and left
// out of the analysis (Istio would never see it); the others are analyzed as the API server
// would store them (pruned and defaulted). Context sources were admitted when they were
// applied: they are only defaulted.
func admitAll(req analyzeRequest, report *analyzeReport) ([]analyzeSource, error) {
	if len(req.CRDs) == 0 {
		return req.Sources, nil
	}
	set, err := loadCRDs(req.CRDs)
	if err != nil {
		return nil, err
	}
	out := make([]analyzeSource, 0, len(req.Sources))
	for _, s := range req.Sources {
		obj, errs, crd, handled, err := set.admit(s.Text, !s.Context)
		if err != nil {
			if !handled {
				out = append(out, s) // Istio's reader reports what it cannot parse
				continue
			}
			return nil, fmt.Errorf("%s: %w", s.Name, err)
		}
		if !handled {
			out = append(out, s)
			continue
		}
		if !s.Context && len(errs) > 0 {
			var crdFile string
			var structural *structuralschema.Structural
			if crd != nil {
				crdFile, structural = crd.file, crd.structural
			}
			report.CRDErrors = append(report.CRDErrors, toCRDErrors(s.Name, crdFile, structural, errs)...)
			continue
		}
		if obj != nil {
			text, err := yaml.Marshal(obj)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", s.Name, err)
			}
			s.Text = string(text)
		}
		out = append(out, s)
	}
	return out, nil
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
