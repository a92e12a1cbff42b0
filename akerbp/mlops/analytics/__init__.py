"""Model analytics: recording prediction calls (summary, recorder) and querying them (rows, query)."""
