"""Hardware: target descriptions (hw_configs/*.toml) and the fixed-point arithmetic."""
