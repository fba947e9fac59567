"""Input and output serializers of the payments API, by subdomain."""
