package main

// What the API server does to a custom resource before it stores it, with the API server's own
// code (k8s.io/apiextensions-apiserver at the version the istio module requires): the CRD
// version's structural schema drops unknown fields (unless the CRD preserves them) and
// non-nullable nulls, then applies the schema's defaults (customresource_handler's
// unstructuredSchemaCoercer, then its unstructuredDefaulter). Without it an object would reach
// istiod as written rather than as a cluster holds it: an HTTPRoute match without a path, which
// the Gateway API schema defaults to PathPrefix "/", crashes istiod's route conversion.

import (
	"fmt"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	structuralpruning "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// crdSchema is one served version of a CRD as the API server serves it.
type crdSchema struct {
	structural      *structuralschema.Structural
	preserveUnknown bool // spec.preserveUnknownFields: nothing is pruned
}

// crdSchemas builds the structural schema of every served version of crd, as the API server
// does when it starts serving it (getOrCreateServingInfoFor: NewStructural, then PruneDefaults).
func crdSchemas(crd *apiextensionsv1.CustomResourceDefinition) (map[schema.GroupVersionKind]crdSchema, error) {
	out := map[schema.GroupVersionKind]crdSchema{}
	for _, v := range crd.Spec.Versions {
		if !v.Served || v.Schema == nil {
			continue
		}
		internal := &apiextensions.CustomResourceValidation{}
		if err := apiextensionsv1.Convert_v1_CustomResourceValidation_To_apiextensions_CustomResourceValidation(v.Schema, internal, nil); err != nil {
			return nil, fmt.Errorf("version %s: %v", v.Name, err)
		}
		s, err := structuralschema.NewStructural(internal.OpenAPIV3Schema)
		if err != nil {
			if crd.Spec.PreserveUnknownFields {
				continue // the API server serves it without a structural schema: stored as sent
			}
			return nil, fmt.Errorf("version %s: structural schema: %v", v.Name, err)
		}
		s = s.DeepCopy()
		if !crd.Spec.PreserveUnknownFields {
			if err := structuraldefaulting.PruneDefaults(s); err != nil {
				return nil, fmt.Errorf("version %s: pruning defaults: %v", v.Name, err)
			}
		}
		gvk := schema.GroupVersionKind{Group: crd.Spec.Group, Version: v.Name, Kind: crd.Spec.Names.Kind}
		out[gvk] = crdSchema{structural: s, preserveUnknown: crd.Spec.PreserveUnknownFields}
	}
	return out, nil
}

// admit prunes and defaults obj (a custom resource of this schema's version) in place, as the
// API server does on create and update.
func (s crdSchema) admit(obj map[string]any) {
	if !s.preserveUnknown {
		structuralpruning.Prune(obj, s.structural, true)
		structuraldefaulting.PruneNonNullableNullsWithoutDefaults(obj, s.structural)
	}
	structuraldefaulting.Default(obj, s.structural)
}
