"""imgpress: compress whole image collections and report what it cost in quality."""
