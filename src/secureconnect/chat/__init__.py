"""Conversations, members, the ordered message timeline, receipts and realtime delivery."""
