"""sprint_lab: study how pruning single attention heads changes a language model's reasoning."""
