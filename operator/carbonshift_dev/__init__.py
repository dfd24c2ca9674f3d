"""Development-only tools for carbonshift: the local control plane (`devcluster`) and the demo (`demo`).

Not part of the operator: the wheel and the image hold only `carbonshift`, and an import contract
(`lint-imports`) keeps `carbonshift` from importing this package. It is importable from a clone after
`make python-deps` (the editable install puts `operator/` on the path). Design: docs/design/packaging.md.
"""
