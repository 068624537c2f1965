"""What the process learns from the system: memory limits and use, its age, its malloc arenas."""
