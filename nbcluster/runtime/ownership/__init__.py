"""Who owns each object and who borrows it: ObjectRefs, reference counts, lineage."""
