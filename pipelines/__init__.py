"""The review-classifier KFP pipeline, its runner and the embedded local stack."""
