"""Pipeline stages of the review-classifier platform, one subpackage each."""
