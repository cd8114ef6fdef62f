"""poemctl: train LSTM language models on the Complete Tang Poems and write new poems with them."""

__version__ = "0.1.0"
