"""Drives Helm's library (helm-sdkpy) for the chart tests; prints JSON.

    helm.py lint CHART
    helm.py install --kubeconfig K --namespace NS --release R [--values JSON] [--take-ownership] CHART
    helm.py upgrade --kubeconfig K --namespace NS --release R [--values JSON] CHART
    helm.py uninstall --kubeconfig K --namespace NS --release R

helm-sdkpy has no client-only `template`: a chart is rendered by installing
it (without waiting) into the test API server, which also applies it.
"""
import argparse
import asyncio
import json
import sys

import helm_sdkpy as helm


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("action", choices=["lint", "install", "upgrade", "uninstall"])
    p.add_argument("chart", nargs="?")
    p.add_argument("--kubeconfig")
    p.add_argument("--namespace", default="default")
    p.add_argument("--release")
    p.add_argument("--values", default="{}")
    # Adopt objects that exist without Helm's ownership (CRDs applied by kubectl).
    p.add_argument("--take-ownership", action="store_true")
    a = p.parse_args()
    cfg = helm.Configuration(namespace=a.namespace, kubeconfig=a.kubeconfig)
    values = json.loads(a.values)
    try:
        if a.action == "lint":
            out = asyncio.run(helm.Lint(cfg).run(a.chart))
        elif a.action == "install":
            out = asyncio.run(
                helm.Install(cfg).run(
                    a.release, a.chart, values=values, wait=False, timeout=120,
                    take_ownership=a.take_ownership,
                )
            )
        elif a.action == "upgrade":
            out = asyncio.run(
                helm.Upgrade(cfg).run(a.release, a.chart, values=values, wait=False, timeout=120)
            )
        else:
            out = asyncio.run(helm.Uninstall(cfg).run(a.release, wait=False, timeout=120))
    except helm.HelmError as e:
        json.dump({"error": str(e)}, sys.stdout)
        return 2
    json.dump(out, sys.stdout, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
