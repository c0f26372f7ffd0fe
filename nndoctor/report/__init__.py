"""What a run says: findings, codes, where they point."""
