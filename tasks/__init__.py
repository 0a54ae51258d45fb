"""tinyfoundry stages. Each stage is a plain function `run_<stage>(cfg_section, inputs, output) -> stats`;
`python -m tasks <stage>` (tasks/__main__.py) is the one CLI that dvc.yaml calls."""
