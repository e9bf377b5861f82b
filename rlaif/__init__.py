"""rlaif: reinforcement learning from AI feedback."""
