"""The Ray Serve application: the job's model for one request at a time, and search."""
