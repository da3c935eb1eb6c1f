"""`radio-vlm compare GRID`: the paper's comparisons as a grid of quickstart-sized cells
(``runner``: grid schema and loop; ``cells``: one cell; ``report``: tables and plots). The YAML
grids beside this file are the shipped comparisons."""
