"""The engine and what it works on: records, facts, terminology, labs, therapy, modifiers, outcome. No I/O."""
