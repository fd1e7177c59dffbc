"""Files: safe loading and atomic writing (``io``), Lightning and plain checkpoints
(``checkpoints``), Hugging Face folders (``hf``), the models and data a command reads
(``inputs``) and the output folders it writes (``outputs``)."""
