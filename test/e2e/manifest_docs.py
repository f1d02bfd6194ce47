"""Manifest documents the Python end-to-end suites write: a Gateway, an InferencePool with an
HTTPRoute to it, and a ready Pod (the simulated engines' addresses)."""


def gateway(name, port, cls="sluice"):
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: default}}
spec:
  gatewayClassName: {cls}
  listeners:
  - {{name: http, port: {port}, protocol: HTTP}}
"""


def pool_and_route(gateways, target_port, pool="llama", route="llm"):
    parents = ", ".join(f"{{name: {g}}}" for g in gateways)
    return f"""apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {{name: {pool}, namespace: default}}
spec:
  selector: {{matchLabels: {{app: llama}}}}
  targetPorts: [{{number: {target_port}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {route}, namespace: default}}
spec:
  parentRefs: [{parents}]
  rules:
  - backendRefs: [{{group: inference.networking.k8s.io, kind: InferencePool, name: {pool}}}]
"""


def pod(name, ip):
    return f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default, labels: {{app: llama}}}}
status: {{podIP: {ip}, phase: Running, conditions: [{{type: Ready, status: "True"}}]}}
"""
