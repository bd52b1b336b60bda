"""Recording verification: is the file Tavus announced really in the user's bucket, and whole?

``locations`` parses and allow-lists the location (no SDK), ``base`` is the verifier contract,
``s3`` / ``gcs`` / ``azure_blob`` are the verifiers (``verifiers`` registers them),
``verification`` runs one attempt and decides what comes next, ``state`` keeps the result on
the conversation's recording, ``unverified`` words the alert.
"""
