"""Research workflow: ablation study, bit-width sweep, figures."""
