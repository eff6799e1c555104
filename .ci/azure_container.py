"""Create a blob container on Azurite with a SharedKey-signed request (stdlib only)."""
import base64, hashlib, hmac, sys, urllib.request
from email.utils import formatdate

account, key, endpoint, container = sys.argv[1:5]
date = formatdate(usegmt=True)
version = "2021-08-06"
# urllib adds a Content-Type to a PUT with a body, so set one and sign it.
headers = {"x-ms-date": date, "x-ms-version": version, "Content-Type": "application/octet-stream"}
canonical_headers = f"x-ms-date:{date}\nx-ms-version:{version}\n"
resource = f"/{account}/{account}/{container}\nrestype:container"
to_sign = "PUT\n\n\n\n\napplication/octet-stream\n\n\n\n\n\n\n" + canonical_headers + resource
sig = base64.b64encode(hmac.new(base64.b64decode(key), to_sign.encode(), hashlib.sha256).digest()).decode()
headers["Authorization"] = f"SharedKey {account}:{sig}"
req = urllib.request.Request(f"{endpoint}/{container}?restype=container", method="PUT", headers=headers, data=b"")
try:
    urllib.request.urlopen(req)
except urllib.error.HTTPError as e:
    if e.code != 409:  # 409: exists already
        raise
