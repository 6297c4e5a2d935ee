#!/usr/bin/env python3
"""Writes the JSON schemas kubeconform validates the helm chart's output against, offline.

kubeconform normally downloads schemas from GitHub, which the build machines cannot reach.
This script makes the same layout from sources the Go module proxy serves:

  * Kubernetes' own OpenAPI v2 document (api/openapi-spec/swagger.json in the k8s.io/kubernetes
    module) -> one standalone schema per kind (every $ref inlined);
  * CustomResourceDefinition YAMLs (prometheus-operator: ServiceMonitor, PrometheusRule;
    KEDA: ScaledObject, TriggerAuthentication) -> one schema per served version.

Every schema is "strict": objects that list their properties refuse unknown ones, as
`kubeconform -strict` expects. Files are named like kubeconform's default registry:
  OUT/v<k8s version>-standalone-strict/<kind>[-<group's first label>]-<version>.json
and are used with
  kubeconform -strict -kubernetes-version <k8s version> -schema-location OUT

Usage: kube-schemas.py --k8s-version 1.37.2 --swagger FILE --crd FILE... --out DIR
"""

import argparse
import json
import os
import sys
import tempfile

import yaml

# A $ref that refers (directly or through others) back to itself is inlined only once per
# path; the inner occurrence accepts anything. Only apiextensions' JSONSchemaProps does this.
ANY = {}


def die(msg):
    print(f"kube-schemas: {msg}", file=sys.stderr)
    sys.exit(1)


def file_name(kind, group, version):
    """kubeconform's name for a kind: group 'apps' -> deployment-apps-v1.json, core -> -v1."""
    suffix = f"-{group.split('.')[0].lower()}" if group else ""
    return f"{kind.lower()}{suffix}-{version.lower()}.json"


def allow_null(schema):
    """Kubernetes accepts null for an optional field (it means 'not set'), and so do we."""
    t = schema.get("type")
    if isinstance(t, str):
        schema["type"] = [t, "null"]
    return schema


def strict_object(schema, preserve_unknown=False):
    """An object that names its properties refuses others, unless told to keep them."""
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not preserve_unknown
    ):
        schema["additionalProperties"] = False
    return schema


# --- Kubernetes OpenAPI v2 -----------------------------------------------------------------


class SwaggerInliner:
    def __init__(self, definitions):
        self.defs = definitions

    def resolve(self, node, stack):
        if isinstance(node, list):
            return [self.resolve(x, stack) for x in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            if name not in self.defs:
                die(f"unresolved $ref {node['$ref']}")
            if name in stack:
                return dict(ANY)
            return self.resolve(self.defs[name], stack + (name,))
        fmt = node.get("format")
        if fmt == "int-or-string":
            return {"oneOf": [{"type": ["string", "null"]}, {"type": ["integer", "null"]}]}
        out = {}
        for key, value in node.items():
            if key in ("properties", "patternProperties", "definitions"):
                out[key] = {k: self.resolve(v, stack) for k, v in value.items()}
            elif key in ("items", "additionalProperties", "not"):
                out[key] = self.resolve(value, stack) if isinstance(value, (dict, list)) else value
            elif key in ("allOf", "anyOf", "oneOf"):
                out[key] = [self.resolve(x, stack) for x in value]
            elif key.startswith("x-kubernetes-") or key == "description":
                continue  # not validation; descriptions alone are most of the bytes
            else:
                out[key] = value
        if stack and stack[-1].endswith(".api.resource.Quantity") and out.get("type") == "string":
            # A quantity is written as "100m" or as a bare number (cpu: 1).
            return {"oneOf": [{"type": ["string", "null"]}, {"type": ["number", "null"]}]}
        return allow_null(strict_object(out))


def swagger_schemas(path):
    with open(path, encoding="utf-8") as f:
        spec = json.load(f)
    defs = spec.get("definitions") or die(f"{path}: no 'definitions' (not a swagger 2.0 file?)")
    inliner = SwaggerInliner(defs)
    for name, definition in defs.items():
        for gvk in definition.get("x-kubernetes-group-version-kind", []):
            schema = inliner.resolve(definition, (name,))
            # The top level of a manifest is an object, never null.
            schema["type"] = "object"
            schema["$schema"] = "http://json-schema.org/schema#"
            yield file_name(gvk["kind"], gvk.get("group", ""), gvk["version"]), schema


# --- CustomResourceDefinitions -------------------------------------------------------------


def crd_node(node):
    if isinstance(node, list):
        return [crd_node(x) for x in node]
    if not isinstance(node, dict):
        return node
    if node.get("x-kubernetes-int-or-string"):
        return {"oneOf": [{"type": ["string", "null"]}, {"type": ["integer", "null"]}]}
    preserve = bool(node.get("x-kubernetes-preserve-unknown-fields"))
    out = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties"):
            out[key] = {k: crd_node(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = crd_node(value) if isinstance(value, (dict, list)) else value
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [crd_node(x) for x in value]
        elif key.startswith("x-kubernetes-") or key == "description":
            continue
        else:
            out[key] = value
    return allow_null(strict_object(out, preserve))


def crd_schemas(path):
    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    found = False
    for doc in docs:
        if doc.get("kind") != "CustomResourceDefinition":
            continue
        spec = doc["spec"]
        for version in spec.get("versions", []):
            schema = (version.get("schema") or {}).get("openAPIV3Schema")
            if not schema:
                continue
            found = True
            out = crd_node(schema)
            out["type"] = "object"
            out["$schema"] = "http://json-schema.org/schema#"
            yield file_name(spec["names"]["kind"], spec["group"], version["name"]), out
    if not found:
        die(f"{path}: no CustomResourceDefinition with an openAPIV3Schema")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k8s-version", required=True, help="e.g. 1.37.2 (directory v1.37.2-standalone-strict)")
    ap.add_argument("--swagger", required=True, help="Kubernetes api/openapi-spec/swagger.json")
    ap.add_argument("--crd", action="append", default=[], help="a CRD YAML file (repeatable)")
    ap.add_argument("--out", required=True, help="schema root (kubeconform -schema-location)")
    args = ap.parse_args()

    final = os.path.join(args.out, f"v{args.k8s_version}-standalone-strict")
    os.makedirs(args.out, exist_ok=True)
    # Write into a fresh directory and rename it into place: an interrupted run never leaves
    # a half-filled schema directory that a later run would take as done.
    tmp = tempfile.mkdtemp(prefix=".schemas-", dir=args.out)
    count = 0
    sources = [swagger_schemas(args.swagger)] + [crd_schemas(p) for p in args.crd]
    for source in sources:
        for name, schema in source:
            with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
                json.dump(schema, f, separators=(",", ":"), sort_keys=True)
            count += 1
    if os.path.isdir(final):
        old = final + ".old"
        os.rename(final, old)
        os.rename(tmp, final)
        for n in os.listdir(old):
            os.unlink(os.path.join(old, n))
        os.rmdir(old)
    else:
        os.rename(tmp, final)
    print(f"kube-schemas: {count} schemas in {final}")


if __name__ == "__main__":
    main()
