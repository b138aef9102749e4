"""Geography: zone layers (GeoJSON, GeoPackage, Shapefile) and vectorised point lookup."""
