"""Geography: zone layers (GeoJSON, GeoPackage, Shapefile, any GDAL format), site layers
and vectorised point lookup and geodesic distances.

May use: Shapely, GeoPandas, pyproj; no other citywatch package (bottom layer, beside
``citywatch.streams``).
"""
