"""Text: splitting input into chunks the model speaks well, and the supported languages."""
