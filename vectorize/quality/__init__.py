"""What a collection holds, measured: figures in SQL, limits and a score over them."""
