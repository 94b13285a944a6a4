"""Built-in example models (built in code) and scikit-learn's digits as real data."""
