"""The resources of the mesh: the documents ``meshctl apply`` takes (Service, Route,
AccessPolicy, TrafficPolicy, Mesh), validated with the sidecar's own rules and error style.

    resources = load_documents(text, "mesh.yaml", store.resources())   # ConfigError on any problem
    store.apply(resources, "apply mesh.yaml: ...")

Modules in the order a file flows through them: ``yaml_documents`` (text to documents with
lines), ``models`` (each kind; ``base`` their base, ``names`` their name types,
``traffic_policy`` the TrafficPolicy), ``load`` (validation and messages), ``references`` and
``affinity`` (across documents and the store), ``keys`` (how a stored resource is addressed),
``documents`` (stored form back to file form; JSON Schema).
"""

from meshproxy.config.errors import ConfigError, ConfigIssue

from .affinity import hashing_dependents
from .documents import as_document, json_schema
from .keys import MESH_KEY, NAME_FIELD, Key, key_of, label
from .load import load_documents
from .models import KINDS, MESH_DEFAULTS, AccessPolicy, Mesh, Resource, Route, Service, TrafficPolicy
from .names import is_label, split_ref
from .references import in_use_message, referrers

__all__ = [
    "KINDS",
    "MESH_DEFAULTS",
    "MESH_KEY",
    "NAME_FIELD",
    "AccessPolicy",
    "ConfigError",
    "ConfigIssue",
    "Key",
    "Mesh",
    "Resource",
    "Route",
    "Service",
    "TrafficPolicy",
    "as_document",
    "hashing_dependents",
    "in_use_message",
    "is_label",
    "json_schema",
    "key_of",
    "label",
    "load_documents",
    "referrers",
    "split_ref",
]
