"""Scale-out paths (optional extras): batch prediction on Spark (`radassist[spark]`)."""
