"""One image: its preprocessing, its predictor (embedding, decoder state, prompts), masks and zoom canvases."""
