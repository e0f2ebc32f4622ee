"""Field trials: a SuperLink + ServerApp (`fedtiny serve`) and gateway SuperNodes (`fedtiny gateway`) driving
real or virtual boards over the link protocol, on Flower's Deployment Engine."""
