"""`carbonshift receipt NAMESPACE/NAME`: the carbon receipt of a CarbonAwareJob, read from its status.

Energy (measured by DCGM, or estimated), emissions with their provider, signal and quality, unpriced energy apart,
the two counterfactuals (temporal: this cluster at submission; spatial: the home cluster at submission) and the
avoided emissions split between them, the SCI figures (embodied share, gCO2e and Wh per 1M units of the work the
job reports on its carbonshift.io/work-done annotation, work lost to suspend/resume overhead), and per run chunk
the measured suspend tail and restart ramp. `--output json` prints the same as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from carbonshift.api.base import GROUP, VERSION
from carbonshift.api.carbonawarejob import PLURAL
from carbonshift.domain.accounting import format_receipt, receipt_from_status, work_from_annotations


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", metavar="NAMESPACE/NAME", help="the CarbonAwareJob")
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"), help="kubeconfig file")
    parser.add_argument("--output", "-o", choices=["table", "json"], default="table", help="output format")


def run(args: argparse.Namespace) -> int:
    namespace, sep, name = str(args.job).partition("/")
    if not sep or not namespace or not name:
        print(f"carbonshift receipt: expected NAMESPACE/NAME, got {args.job!r}", file=sys.stderr)
        return 2
    try:
        if args.kubeconfig:
            api = config.new_client_from_config(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
        else:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
            api = client.ApiClient()
    except (config.ConfigException, OSError) as exc:
        print(f"carbonshift receipt: cannot load a kubeconfig: {exc}", file=sys.stderr)
        return 2
    try:
        obj = client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as exc:
        what = "not found" if exc.status == 404 else f"HTTP {exc.status} {exc.reason}"
        print(f"carbonshift receipt: CarbonAwareJob {namespace}/{name}: {what}", file=sys.stderr)
        return 1
    finally:
        api.close()
    status: dict[str, Any] = dict(obj.get("status") or {}) if isinstance(obj, dict) else {}
    annotations = ((obj.get("metadata") or {}).get("annotations") or {}) if isinstance(obj, dict) else {}
    receipt = receipt_from_status(namespace, name, status, work=work_from_annotations(annotations))
    if args.output == "json":
        print(json.dumps(receipt.as_dict(), indent=2))
    else:
        print(f"CarbonAwareJob {namespace}/{name} ({receipt.phase}, zone {receipt.zone or 'unknown'})")
        print(format_receipt(receipt))
    return 0
