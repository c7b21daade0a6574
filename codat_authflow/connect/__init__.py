"""The connect pages' use cases: the pages a lender's customer clicks through
(Codat's guide, *Build your own authorization flow*), served by `app/connect`.

`links`: signed, expiring, company-scoped connect links, their revocation and
the CSRF tokens of the pages' forms. `pages`: what each page shows (platforms
with cached branding, the company's status, its connections) and the
customer's actions, which go through the journey's own use cases
(`codat_authflow.journey`) and are recorded with actor `customer`.
"""
