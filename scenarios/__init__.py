"""The standard scenario specs, one TOML file each; installed as the `clbench.scenario_specs` package."""
