"""Recording verification: is the file Tavus announced really in the user's bucket, and whole?

``locations`` is what every provider shares (the location, the allowlist; no SDK), ``base`` the
provider contract, ``s3`` / ``gcs`` / ``azure_blob`` the providers, each parsing its own URIs
(``verifiers`` registers them and picks one by a URI's scheme),
``verification`` runs one attempt and decides what comes next, ``state`` keeps the result on
the conversation's recording, ``unverified`` words the alert.
"""
