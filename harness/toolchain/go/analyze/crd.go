package main

// Admission of custom resources the way the Kubernetes API server admits them on create, with
// the API server's own code (k8s.io/apiextensions-apiserver at the version the pinned Istio
// requires): the CRD's structural schema, unknown-field pruning (reported, as with
// `kubectl apply --validate=strict`), defaulting, the OpenAPI schema validator, list-type
// invariants, embedded ObjectMeta, and the CRD's CEL rules (x-kubernetes-validations) with the
// API server's cost limits. The order follows the API server's create path: decode and prune
// (customresource_handler's schema coercer), default, PrepareForCreate, then the strategy's
// Validate. Nothing here decides validity itself.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	structurallisttype "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/listtype"
	schemaobjectmeta "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/objectmeta"
	structuralpruning "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	metavalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/validation/field"
	kubeyaml "k8s.io/apimachinery/pkg/util/yaml"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"
)

// crdError is one reason the API server would refuse a source.
type crdError struct {
	File    string   `json:"file"`
	Field   string   `json:"field"`
	Type    string   `json:"type"`             // field.ErrorType, e.g. "FieldValueInvalid"
	Message string   `json:"message"`          // the API server's text after the field path
	CRD     string   `json:"crd"`              // the CRD file the rule comes from
	Rule    string   `json:"rule,omitempty"`   // the CEL rule of a CEL error, from the CRD
	Fields  []string `json:"fields,omitempty"` // for an unknown field: the fields defined there
}

// crdVersion is one served version of a CRD, compiled on first use.
type crdVersion struct {
	file       string
	crd        *apiextensions.CustomResourceDefinition
	version    string
	schema     *apiextensions.JSONSchemaProps
	hasStatus  bool
	compiled   bool
	structural *structuralschema.Structural
	validator  apiservervalidation.SchemaValidator
	celBuilt   bool
	cel        *cel.Validator
}

// crdSet maps group/version/kind to the CRD version that defines it. Files are given in
// priority order: the first file defining a GVK wins (e.g. the standard channel before the
// experimental one).
type crdSet struct {
	byGVK   map[schema.GroupVersionKind]*crdVersion
	byGroup map[string]bool
	byGK    map[schema.GroupKind][]string // served versions, to say which exist
}

func loadCRDs(files []string) (*crdSet, error) {
	set := &crdSet{
		byGVK:   map[schema.GroupVersionKind]*crdVersion{},
		byGroup: map[string]bool{},
		byGK:    map[schema.GroupKind][]string{},
	}
	for _, file := range files {
		if err := set.addFile(file); err != nil {
			return nil, fmt.Errorf("CRD file %s: %w", file, err)
		}
	}
	return set, nil
}

func (s *crdSet) addFile(file string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	dec := kubeyaml.NewYAMLOrJSONDecoder(f, 1<<20)
	for {
		var raw map[string]any
		if err := dec.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if raw == nil || raw["kind"] != "CustomResourceDefinition" {
			continue // e.g. a ValidatingAdmissionPolicy shipped next to the CRDs
		}
		var v1 apiextensionsv1.CustomResourceDefinition
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(raw, &v1); err != nil {
			return err
		}
		crd := &apiextensions.CustomResourceDefinition{}
		if err := apiextensionsv1.Convert_v1_CustomResourceDefinition_To_apiextensions_CustomResourceDefinition(&v1, crd, nil); err != nil {
			return err
		}
		gk := schema.GroupKind{Group: crd.Spec.Group, Kind: crd.Spec.Names.Kind}
		if _, seen := s.byGK[gk]; seen {
			continue // an earlier file defines this kind
		}
		s.byGroup[crd.Spec.Group] = true
		served := []string{}
		for _, ver := range crd.Spec.Versions {
			if !ver.Served {
				continue
			}
			served = append(served, ver.Name)
			props := crd.Spec.Validation
			if ver.Schema != nil {
				props = ver.Schema
			}
			var openapi *apiextensions.JSONSchemaProps
			if props != nil {
				openapi = props.OpenAPIV3Schema
			}
			subresources := crd.Spec.Subresources
			if ver.Subresources != nil {
				subresources = ver.Subresources
			}
			s.byGVK[gk.WithVersion(ver.Name)] = &crdVersion{
				file:      file,
				crd:       crd,
				version:   ver.Name,
				schema:    openapi,
				hasStatus: subresources != nil && subresources.Status != nil,
			}
		}
		s.byGK[gk] = served
	}
}

// compile builds what the API server builds when it starts serving a CRD version
// (customresource_handler's getOrCreateServingInfoFor and customresource.NewStrategy).
func (v *crdVersion) compile() error {
	if v.compiled {
		return nil
	}
	v.compiled = true
	if v.schema == nil {
		return fmt.Errorf("%s %s has no schema", v.crd.Name, v.version)
	}
	structural, err := structuralschema.NewStructural(v.schema)
	if err != nil {
		return fmt.Errorf("%s %s: structural schema: %w", v.crd.Name, v.version, err)
	}
	structural = structural.DeepCopy()
	if err := structuraldefaulting.PruneDefaults(structural); err != nil {
		return fmt.Errorf("%s %s: pruning defaults: %w", v.crd.Name, v.version, err)
	}
	validator, _, err := apiservervalidation.NewSchemaValidator(v.schema)
	if err != nil {
		return fmt.Errorf("%s %s: schema validator: %w", v.crd.Name, v.version, err)
	}
	v.structural = structural
	v.validator = validator
	return nil
}

// celValidator compiles the CRD version's CEL rules on first use (most of the cost of a CRD:
// a context object that is only defaulted never needs them).
func (v *crdVersion) celValidator() *cel.Validator {
	if !v.celBuilt {
		v.celBuilt = true
		v.cel = cel.NewValidator(v.structural, true, celconfig.PerCallLimit) // nil without rules
	}
	return v.cel
}

// admit decodes one source as the API server would on create and returns its errors (when
// check is set) and the object as it would be stored (pruned and defaulted), or handled=false
// when no CRD of the set defines the source's kind (a Kubernetes built-in: checked elsewhere).
func (s *crdSet) admit(text string, check bool) (obj map[string]any, errs field.ErrorList, v *crdVersion, handled bool, err error) {
	// decoded as the API server decodes a request body: JSON, whole numbers as int64
	data, err := yaml.YAMLToJSON([]byte(text))
	if err != nil {
		return nil, nil, nil, false, err
	}
	u := &unstructured.Unstructured{}
	if err := utiljson.Unmarshal(data, &u.Object); err != nil {
		return nil, nil, nil, false, err
	}
	gvk := u.GroupVersionKind()
	if !s.byGroup[gvk.Group] {
		return nil, nil, nil, false, nil
	}
	v = s.byGVK[gvk]
	if v == nil {
		// what the API server's REST mapping answers
		detail := fmt.Sprintf("no matches for kind %q in version %q", gvk.Kind, gvk.GroupVersion().String())
		if served := s.byGK[gvk.GroupKind()]; len(served) > 0 {
			detail += fmt.Sprintf(" (served versions: %s)", strings.Join(served, ", "))
		}
		return nil, field.ErrorList{field.Invalid(field.NewPath("apiVersion"), gvk.GroupVersion().String(), detail)}, nil, true, nil
	}
	if err := v.compile(); err != nil {
		return nil, nil, nil, true, err
	}
	errs = append(errs, coerce(u, v)...)
	structuraldefaulting.Default(u.Object, v.structural)
	// PrepareForCreate: a create cannot set status; the first generation is 1
	if v.hasStatus {
		delete(u.Object, "status")
	}
	u.SetGeneration(1)
	if !check {
		return u.Object, nil, v, true, nil
	}
	errs = append(errs, validate(u, v)...)
	return u.Object, errs, v, true, nil
}

// coerce is the API server's decoding of a custom resource (unstructuredSchemaCoercer with
// unknown-field paths returned, as with fieldValidation=Strict): unknown fields become errors.
func coerce(u *unstructured.Unstructured, v *crdVersion) field.ErrorList {
	kind, apiVersion := u.GetKind(), u.GetAPIVersion()
	meta, foundMeta, unknown, err := schemaobjectmeta.GetObjectMetaWithOptions(u.Object,
		schemaobjectmeta.ObjectMetaOptions{ReturnUnknownFieldPaths: true})
	if err != nil {
		return field.ErrorList{field.Invalid(field.NewPath("metadata"), nil, err.Error())}
	}
	if p := v.crd.Spec.PreserveUnknownFields; p == nil || !*p {
		unknown = append(unknown, structuralpruning.PruneWithOptions(u.Object, v.structural, true,
			structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})...)
		structuraldefaulting.PruneNonNullableNullsWithoutDefaults(u.Object, v.structural)
	}
	coerceErr, paths := schemaobjectmeta.CoerceWithOptions(nil, u.Object, v.structural, false,
		schemaobjectmeta.CoerceOptions{ReturnUnknownFieldPaths: true})
	unknown = append(unknown, paths...)
	var errs field.ErrorList
	if coerceErr != nil {
		errs = append(errs, coerceErr)
	}
	u.SetKind(kind)
	u.SetAPIVersion(apiVersion)
	if foundMeta {
		if err := schemaobjectmeta.SetObjectMeta(u.Object, meta); err != nil {
			errs = append(errs, field.Invalid(field.NewPath("metadata"), nil, err.Error()))
		}
	}
	sort.Strings(unknown)
	for _, p := range unknown {
		// the API server's strict decoding error: `unknown field "spec.x"`
		errs = append(errs, &field.Error{Type: unknownField, Field: p, Detail: fmt.Sprintf("unknown field %q", p)})
	}
	return errs
}

// unknownField marks an unknown field (the API server reports those as a strict decoding
// error rather than a field.Error).
const unknownField field.ErrorType = "FieldValueUnknown"

// validate is customResourceStrategy.Validate on create.
func validate(u *unstructured.Unstructured, v *crdVersion) field.ErrorList {
	var errs field.ErrorList
	namespaced := v.crd.Spec.Scope == apiextensions.NamespaceScoped
	errs = append(errs, metavalidation.ValidateObjectMetaAccessor(u, namespaced, metavalidation.NameIsDNSSubdomain, field.NewPath("metadata"))...)
	errs = append(errs, apiservervalidation.ValidateCustomResource(nil, u.UnstructuredContent(), v.validator)...)
	errs = append(errs, schemaobjectmeta.Validate(nil, u.Object, v.structural, false)...)
	errs = append(errs, structurallisttype.ValidateListSetsAndMaps(nil, v.structural, u.Object)...)
	if celValidator := v.celValidator(); celValidator != nil {
		if blocked := blocking(errs); blocked != nil {
			errs = append(errs, blocked)
		} else {
			celErrs, _ := celValidator.Validate(context.Background(), nil, v.structural, u.Object, nil, celconfig.RuntimeCELCostBudget)
			errs = append(errs, celErrs...)
		}
	}
	return errs
}

// blocking mirrors the strategy's rule: after these schema errors the CEL rules are not run.
func blocking(errs field.ErrorList) *field.Error {
	for _, e := range errs {
		switch e.Type {
		case field.ErrorTypeNotSupported, field.ErrorTypeRequired, field.ErrorTypeTooLong,
			field.ErrorTypeTooMany, field.ErrorTypeTypeInvalid:
			return field.Invalid(nil, nil, "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation")
		}
	}
	return nil
}

func toCRDErrors(file, crdFile string, s *structuralschema.Structural, errs field.ErrorList) []crdError {
	out := make([]crdError, 0, len(errs))
	for _, e := range errs {
		msg := e.Detail // an unknown field: its detail is the whole message
		if e.Type != unknownField {
			msg = e.ErrorBody()
		}
		out = append(out, crdError{File: file, Field: e.Field, Type: string(e.Type), Message: msg, CRD: crdFile,
			Rule: celRule(s, e), Fields: knownFields(s, e)})
	}
	return out
}

// celRule finds the x-kubernetes-validations rule a CEL error reports (the error carries only
// the rule's message): the rule at the error's field path whose message the error shows.
func celRule(s *structuralschema.Structural, e *field.Error) string {
	if s == nil {
		return ""
	}
	if e.Type != field.ErrorTypeInvalid {
		return ""
	}
	node := schemaAt(s, e.Field)
	if node == nil {
		return ""
	}
	for _, rule := range node.XValidations {
		if (rule.Message != "" && strings.Contains(e.Detail, rule.Message)) || strings.Contains(e.Detail, rule.Rule) {
			return rule.Rule
		}
	}
	return ""
}

// knownFields lists the fields the schema defines where an unknown field was found.
func knownFields(s *structuralschema.Structural, e *field.Error) []string {
	if e.Type != unknownField {
		return nil
	}
	parent := ""
	if i := strings.LastIndexAny(e.Field, ".["); i > 0 {
		parent = e.Field[:i]
	}
	node := schemaAt(s, parent)
	if node == nil {
		return nil
	}
	names := make([]string, 0, len(node.Properties))
	for name := range node.Properties {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// schemaAt is the schema node of a field path such as spec.rules[0].matches[0].path.
func schemaAt(s *structuralschema.Structural, path string) *structuralschema.Structural {
	node := s
	rest := path
	for rest != "" && node != nil {
		switch {
		case strings.HasPrefix(rest, "["):
			end := strings.Index(rest, "]")
			if end < 0 {
				return nil
			}
			rest = rest[end+1:]
			switch {
			case node.Items != nil:
				node = node.Items
			case node.AdditionalProperties != nil:
				node = node.AdditionalProperties.Structural
			default:
				return nil
			}
		default:
			rest = strings.TrimPrefix(rest, ".")
			end := strings.IndexAny(rest, ".[")
			if end < 0 {
				end = len(rest)
			}
			child, ok := node.Properties[rest[:end]]
			if !ok {
				return nil
			}
			node = &child
			rest = rest[end:]
		}
	}
	return node
}
