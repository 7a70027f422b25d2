#!/usr/bin/env python3
"""Thermal stress of a bar heated from a reference temperature, reporting
through the simcache sidecar's run API. Standard library only.

Inputs come from the JSON file named by SIMCACHE_INPUTS; logs, metrics and
outputs go to the sidecar at SIMCACHE_URL with the token SIMCACHE_RUN_TOKEN.
"""
import json
import os
import urllib.request

URL = os.environ["SIMCACHE_URL"]
TOKEN = os.environ["SIMCACHE_RUN_TOKEN"]


def post(path, body):
    req = urllib.request.Request(
        URL + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Bearer " + TOKEN},
        method="POST",
    )
    with urllib.request.urlopen(req) as resp:
        return json.load(resp)


with open(os.environ["SIMCACHE_INPUTS"]) as f:
    inputs = json.load(f)

MATERIALS = {  # Young's modulus (Pa), thermal expansion (1/K)
    "steel": (200e9, 12e-6),
    "copper": (110e9, 17e-6),
    "aluminium": (69e9, 23e-6),
}
E, alpha = MATERIALS[inputs.get("material", "steel")]
delta_t = inputs["temperature"] - inputs.get("reference_temperature", 293.15)
length = inputs.get("length", 1.0)

post("/run/logs", {"level": "INFO", "message": f"material {inputs.get('material', 'steel')}, dT = {delta_t:.2f} K"})
# Metrics in one batch: an iteration history.
post("/run/metrics", [{"name": "residual", "value": 1.0 / 2**i, "step": i, "category": "performance"} for i in range(10)])

outputs = {
    "max_stress": E * alpha * abs(delta_t),  # fully constrained bar
    "elongation": alpha * delta_t * length,  # free bar
}
post("/run/outputs", outputs)
print(json.dumps(outputs))  # stdout lines are captured as logs too
